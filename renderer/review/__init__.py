"""What `render` would change, object by object, for a reviewer (`wasm-gitops diff`).

A pull request that upgrades a filter changes files in a telling pattern (a ConfigMap file now holds
a differently named ConfigMap, a deployment patch names it); a reviewer wants the objects: which
ConfigMap replaces which (binary size and sha256, never base64, and what changed inside the module),
which fields of which object change, and what each change does to the running mesh (the effect labels
and their tables: renderer/review/effects.py).

This reuses the check's comparison (kept with the bytes on disk of every differing file) and the
plan's objects: nothing is rendered twice. The output formats are reporters (renderer/reporters/).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..clusters import ClusterChange
from ..output import Changes
from ..plan import MANIFEST, Plan
from ..yamlio import SpecSyntaxError, load_document
from .effects import (
    EFFECTS,
    HOT,
    LISTENER_DRAINS,
    PRUNED,
    PRUNED_AFTER_ROLLOUT,
    WORKLOADS,
    Obj,
    chain_objects,
    chain_order,
    effect,
    filter_configmap,
    meta,
)
from .fields import as_text, decoded, field_changes, leaves, module_bytes, module_change
from .leaving import leaving_resources
from .model import SIGN, Chain, FieldChange, ModuleChange, ObjectChange, ObjectId, Review, arrow

# The teams' other resources (a Service, ...) sort with the filter objects, before the kustomizations.
_KIND_ORDER = {"ConfigMap": 0, "Deployment": 1, "EnvoyFilter": 2, "WasmPlugin": 2, "TrafficExtension": 2, "Kustomization": 3,
               "Application": 4, "ApplicationSet": 4}
_LEAVES_NOTE = ("leaves the tree with its overlay's resources: Argo CD and Flux (prune) delete it unless something "
                "else manages it")
_OVERLAY_GONE_NOTE = ("its overlay is gone: Argo CD and Flux (prune) delete this workload unless something else "
                      "manages it")

Side = dict[ObjectId, tuple[str, Obj]]  # an object -> (its file, its content), before or after


def _load(file: str, data: bytes) -> Obj | None:
    try:
        obj = load_document(data, file).data
    except SpecSyntaxError:
        return None
    return obj if isinstance(obj, dict) else None


def _overlay_namespaces(objects: Iterable[tuple[str, Obj]]) -> dict[str, str]:
    """Directory -> the namespace its kustomization.yaml sets: deployment patches carry none."""
    found = {}
    for file, obj in objects:
        if posixpath.basename(file) == "kustomization.yaml" and isinstance(obj.get("namespace"), str):
            found[posixpath.dirname(file)] = obj["namespace"]
    return found


def _identity(file: str, obj: Obj, namespaces: Mapping[str, str]) -> ObjectId:
    kind = str(obj.get("kind", "?"))
    m = meta(obj)
    name = m.get("name")
    if not isinstance(name, str):  # a kustomization.yaml has no name: its file is its identity
        return ObjectId(kind, "", file)
    namespace = m.get("namespace")
    if not isinstance(namespace, str):
        namespace = namespaces.get(posixpath.dirname(file), "")
    return ObjectId(kind, namespace, name)


def _group(file: str) -> str:
    parts = file.split("/")
    if parts[0] == "base":
        return "base"
    if parts[0] == "overlays" and len(parts) > 2:
        return f"service {parts[1]}"
    if parts[0] == "trees" and len(parts) > 2:
        return f"tree {parts[1]}"
    if parts[0] == "clusters" and len(parts) > 2:
        return f"cluster {parts[1]}"
    return ""


def _pod_annotations(obj: Obj | None) -> Any:
    spec = obj.get("spec") if obj else None
    template = spec.get("template") if isinstance(spec, dict) else None
    m = template.get("metadata") if isinstance(template, dict) else None
    return m.get("annotations") if isinstance(m, dict) else None


def _overlay_gone(patch_file: str, changes: Changes) -> bool:
    """The workload's whole overlay is removed: it leaves the root kustomization, patch and all."""
    return posixpath.join(posixpath.dirname(patch_file), "kustomization.yaml") in changes.removed


def _replacements(old: Side, new: Side) -> tuple[dict[ObjectId, Obj], dict[ObjectId, ObjectId]]:
    """A new binary is a new ConfigMap name: pair each added filter ConfigMap with the one it replaces
    (same filter, same namespace). Returns added -> replaced object, and replaced id -> added id."""
    gone = {key: (oid, obj) for oid, (_, obj) in old.items()
            if oid not in new and (key := filter_configmap(oid, obj)) is not None}
    replaced: dict[ObjectId, Obj] = {}
    successor: dict[ObjectId, ObjectId] = {}
    for oid, (_, obj) in new.items():
        key = filter_configmap(oid, obj)
        if oid not in old and key in gone:
            old_id, old_obj = gone[key]
            replaced[oid] = old_obj
            successor[old_id] = oid
    return replaced, successor


def _chains(old_files: Mapping[str, Obj], new_files: Mapping[str, Obj]) -> tuple[Chain, ...]:
    before, after = chain_objects(old_files), chain_objects(new_files)
    chains = []
    for service in sorted(set(before) | set(after)):
        a, b = chain_order(before.get(service, ())), chain_order(after.get(service, ()))
        if a != b and a and b:  # a service that comes or goes shows its filters as objects already
            chains.append(Chain(service, a, b))
    return tuple(chains)


def _current_objects(changes: Changes, touched: set[str]) -> tuple[dict[str, Obj], list[str]]:
    """The objects on disk a review reads (touched files, every kustomization), and the touched files
    that no longer parse as one object."""
    unreadable: list[str] = []
    current: dict[str, Obj] = {}
    for file, data in changes.current.items():
        if file == MANIFEST or not file.endswith(".yaml"):
            continue
        if file in touched or posixpath.basename(file) == "kustomization.yaml":
            obj = _load(file, data)
            if obj is None:
                if file in touched:
                    unreadable.append(file)
                continue
            current[file] = obj
    return current, unreadable


@dataclass
class _Reading:
    """One review in the making: both sides of every touched object, and what the objects do."""

    changes: Changes
    planned: dict[str, Obj]
    current: dict[str, Obj]
    touched: set[str]
    old: Side = field(default_factory=dict)
    new: Side = field(default_factory=dict)
    leaving_ids: dict[ObjectId, tuple[str, str, Obj]] = field(default_factory=dict)
    replaced: dict[ObjectId, Obj] = field(default_factory=dict)
    successor: dict[ObjectId, ObjectId] = field(default_factory=dict)
    notes: dict[ObjectId, str] = field(default_factory=dict)
    rolling: set[str] = field(default_factory=set)
    leaving: set[str] = field(default_factory=set)

    def sides(self) -> None:
        new_ns = _overlay_namespaces(self.planned.items())
        old_ns = {**new_ns, **_overlay_namespaces(self.current.items())}
        for file in sorted(self.touched):
            if file in self.planned:
                self.new[_identity(file, self.planned[file], new_ns)] = (file, self.planned[file])
            if file in self.current and file not in self.changes.added:
                self.old[_identity(file, self.current[file], old_ns)] = (file, self.current[file])
        self.replaced, self.successor = _replacements(self.old, self.new)
        self.notes = {new_id: f"replaces {old_id.name}" for old_id, new_id in self.successor.items()}
        self.notes.update({old_id: f"replaced by {new_id.name}" for old_id, new_id in self.successor.items()})

    def dropped(self, out: Path, root: str) -> list[str]:
        """The workload and other objects of resources an overlay drops: they leave the built tree."""
        leaving_objects, unlisted = leaving_resources(self.changes, self.current, self.planned, out, root)
        for kfile, resource, obj in leaving_objects:
            oid = _identity(kfile, obj, {})
            if oid not in self.new:
                self.leaving_ids.setdefault(oid, (kfile, resource, obj))
        return unlisted

    def order(self) -> list[ObjectId]:
        def key(i: ObjectId) -> tuple[int, str, str, int]:
            # A replaced ConfigMap right after its replacement, whatever their content hashes.
            anchor = self.successor.get(i, i)
            return _KIND_ORDER.get(i.kind, 2), anchor.namespace, anchor.name, int(i in self.successor)

        return sorted(set(self.old) | set(self.new) | set(self.leaving_ids), key=lambda i: (key(i), i))

    def change(self, oid: ObjectId) -> ObjectChange | None:
        before, after = self.old.get(oid), self.new.get(oid)
        if before is not None and after is not None and before[1] == after[1]:
            return None  # moved between files, same object
        label = f"{oid.namespace}/{oid.name}" if oid.namespace else oid.name
        if before is None and after is None:  # only in the dropped resources
            kfile, resource, _ = self.leaving_ids[oid]
            if oid.kind in WORKLOADS:
                self.leaving.add(label)
            file = posixpath.normpath(posixpath.join(posixpath.dirname(kfile), resource))
            return ObjectChange("removed", oid, file, (), PRUNED, _LEAVES_NOTE, group=_group(kfile))
        rolls = gone = False
        if oid.kind in WORKLOADS:
            if before is not None and after is None and _overlay_gone(before[0], self.changes):
                gone = True
                self.leaving.add(label)
            elif _pod_annotations(before[1] if before else None) != _pod_annotations(after[1] if after else None):
                rolls = True
                self.rolling.add(label)
        if before is None:
            assert after is not None
            return self.added(oid, after, rolls)
        if after is None:
            note = _OVERLAY_GONE_NOTE if gone else self.notes.get(oid, "")
            found = effect("removed", oid, before[1], (), rolls=rolls, leaves=gone)
            return ObjectChange("removed", oid, before[0], (), found, note, group=_group(before[0]))
        fields = field_changes(before[1], after[1])
        found = effect("changed", oid, after[1], fields, rolls=rolls, leaves=False)
        return ObjectChange("changed", oid, after[0], fields, found, group=_group(after[0]))

    def added(self, oid: ObjectId, after: tuple[str, Obj], rolls: bool) -> ObjectChange:
        file, obj = after
        if oid in self.replaced:
            fields = field_changes(self.replaced[oid], obj)
        else:
            fields = tuple(FieldChange(p, None, as_text(v)) for p, v in leaves(obj).items())
        module = None
        binary = module_bytes(obj)
        if binary is not None and filter_configmap(oid, obj) is not None:
            module = module_change(module_bytes(self.replaced.get(oid)), binary)
        found = effect("added", oid, obj, fields, rolls=rolls, leaves=False)
        return ObjectChange("added", oid, file, fields, found, self.notes.get(oid, ""), module, _group(file))

    def chains(self) -> tuple[Chain, ...]:
        changes, touched = self.changes, self.touched
        old_files = {f: o for f, o in self.planned.items() if f not in changes.added and f not in touched}
        old_files.update({f: o for f, o in self.current.items() if f in touched})
        return _chains(old_files, dict(self.planned))


def build_review(changes: Changes, plan: Plan, out: Path = Path("."), root: str = ".",
                 clusters: tuple[ClusterChange, ...] = ()) -> Review:
    touched = set(changes.added + changes.changed + changes.removed) - {MANIFEST}
    current, unreadable = _current_objects(changes, touched)
    reading = _Reading(changes, dict(plan.objects), current, touched)
    reading.sides()
    unlisted = reading.dropped(out, root)
    found = [c for oid in reading.order() if (c := reading.change(oid)) is not None]
    return Review(tuple(found), tuple(sorted(reading.rolling)), tuple(sorted(reading.leaving)),
                  tuple(sorted(changes.hand_edited)), tuple(sorted(unreadable)), reading.chains(),
                  tuple(unlisted), clusters)


__all__ = ["EFFECTS", "HOT", "LISTENER_DRAINS", "PRUNED", "PRUNED_AFTER_ROLLOUT",
           "SIGN", "WORKLOADS", "Chain", "FieldChange", "ModuleChange", "ObjectChange", "ObjectId", "Review",
           "arrow", "build_review", "decoded", "field_changes", "module_change"]
