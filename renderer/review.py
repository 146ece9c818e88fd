"""What `render` would change, object by object, for a reviewer: `wasm-gitops diff` (text, github).

A pull request that upgrades a filter changes files in a telling pattern (a ConfigMap file now holds
a differently named ConfigMap, a deployment patch names it); a reviewer wants the objects: which
ConfigMap replaces which (binary size and sha256, never base64), which fields of which object
change, and which workloads roll. This reuses the check's comparison (kept with the bytes on disk of
every differing file) and the plan's objects: nothing is rendered twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .core import ENVOY, CheckResult, _check, prepare
from .envoy.load import EnvoyStep
from .output import Changes
from .plan import MANIFEST, Plan
from .yamlio import SpecSyntaxError, load_document

State = Literal["added", "changed", "removed"]
Obj = Mapping[str, Any]

SIGN: dict[State, str] = {"added": "+", "changed": "~", "removed": "-"}
# Kinds a pod-template annotation change rolls (the renderer only patches Deployments today).
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
_KIND_ORDER = {"ConfigMap": 0, "Deployment": 1, "EnvoyFilter": 2, "WasmPlugin": 2, "Kustomization": 3}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LONG_VALUE = 100
_WIDE_LINE = 100
_FILTER_LABEL = "wasm-gitops.io/filter"


@dataclass(frozen=True, order=True)
class ObjectId:
    kind: str
    namespace: str  # "" when the object has none
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: str | None  # as displayed; None: the field is not there
    new: str | None


@dataclass(frozen=True)
class ObjectChange:
    state: State
    id: ObjectId
    file: str
    fields: tuple[FieldChange, ...] = ()
    rolls: bool = False  # a workload whose pod template changes: its pods are replaced
    note: str = ""  # "replaces ..." / "replaced by ..." for a filter's content-named ConfigMap


@dataclass(frozen=True)
class Review:
    objects: tuple[ObjectChange, ...]
    rolling: tuple[str, ...]  # namespace/name of workloads whose pods roll
    leaving: tuple[str, ...]  # workloads whose overlay is gone: the controllers prune them
    hand_edited: tuple[str, ...]
    unreadable: tuple[str, ...]  # files on disk that no longer parse as one YAML object

    def count(self, state: State) -> int:
        return sum(1 for o in self.objects if o.state == state)

    def summary(self) -> str:
        added = self.count("added")
        text = (f"{added} object{'' if added == 1 else 's'} added, {self.count('changed')} changed, "
                f"{self.count('removed')} removed; workloads that will roll: {', '.join(self.rolling) or 'none'}")
        if self.leaving:
            text += f"; workloads leaving the tree (pruned unless managed elsewhere): {', '.join(self.leaving)}"
        return text


def review_diff(spec_path: Path, out: Path | None = None,
                envoy: EnvoyStep = ENVOY) -> tuple[Review, CheckResult]:
    prepared = prepare(spec_path, out, keep_objects=True, envoy=envoy)
    result = _check(prepared, keep_current=True)  # the check's own comparison, on the plan just built
    return build_review(result.changes, prepared.plan), result


# ------------------------------------------------------------------------------------------ model

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
    raw_meta = obj.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = meta.get("name")
    if not isinstance(name, str):  # a kustomization.yaml has no name: its file is its identity
        return ObjectId(kind, "", file)
    namespace = meta.get("namespace")
    if not isinstance(namespace, str):
        namespace = namespaces.get(posixpath.dirname(file), "")
    return ObjectId(kind, namespace, name)


def _child(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if text == "":
        return '""'
    if len(text) > _LONG_VALUE:
        return f"{text[:_LONG_VALUE - 20]}... ({len(text):,} characters)"
    return text


def binary_summary(encoded: Any) -> str:
    """A binaryData value as a reviewer needs it: how big the module is and which one it is."""
    try:
        raw = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        return f"not base64 ({len(str(encoded)):,} characters)"
    return f"{len(raw):,} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:12]}"


def _embedded_json(value: str) -> Any:
    # Istio's userVolume annotations and the Wasm configuration are JSON inside a string: diffing
    # inside them shows the one ConfigMap name that changed instead of two long lines.
    if value[:1] not in "{[":
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, (dict, list)) and parsed else None


def _flatten(value: Any, path: str, out: dict[str, str | tuple[str, ...]]) -> None:
    if isinstance(value, dict):
        if not value:
            out[path] = "{}"
        for key, item in value.items():
            child = _child(path, str(key))
            if path == "binaryData":
                out[child] = binary_summary(item)
            else:
                _flatten(item, child, out)
    elif isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            out[path] = tuple(_shown(v) for v in value)
        else:
            for index, item in enumerate(value):
                _flatten(item, f"{path}[{index}]", out)
    elif isinstance(value, str) and (parsed := _embedded_json(value)) is not None:
        _flatten(parsed, f"{path} (JSON) ", out)
    else:
        out[path] = _shown(value)


def _leaves(obj: Obj) -> dict[str, str | tuple[str, ...]]:
    out: dict[str, str | tuple[str, ...]] = {}
    _flatten(dict(obj), "", out)
    for header in ("apiVersion", "kind", "metadata.name", "metadata.namespace"):  # in the title already
        out.pop(header, None)
    return {path.replace(" (JSON) .", " (JSON) ").rstrip(): value for path, value in out.items()}


def _as_text(value: str | tuple[str, ...]) -> str:
    return ", ".join(value) if isinstance(value, tuple) else value


def field_changes(old: Obj, new: Obj) -> tuple[FieldChange, ...]:
    before, after = _leaves(old), _leaves(new)
    changes: list[FieldChange] = []
    for path in [*after, *(p for p in before if p not in after)]:
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        if isinstance(a, tuple) and isinstance(b, tuple) and set(a) != set(b):
            # A list of names (a kustomization's resources): what joined and what left.
            changes += [FieldChange(path, item, None) for item in a if item not in b]
            changes += [FieldChange(path, None, item) for item in b if item not in a]
        else:
            changes.append(FieldChange(path, None if a is None else _as_text(a), None if b is None else _as_text(b)))
    return tuple(changes)


def _pod_annotations(obj: Obj | None) -> Any:
    spec = obj.get("spec") if obj else None
    template = spec.get("template") if isinstance(spec, dict) else None
    meta = template.get("metadata") if isinstance(template, dict) else None
    return meta.get("annotations") if isinstance(meta, dict) else None


def _filter_configmap(oid: ObjectId, obj: Obj) -> tuple[str, str] | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if oid.kind == "ConfigMap" and isinstance(labels.get(_FILTER_LABEL), str):
        return oid.namespace, labels[_FILTER_LABEL]
    return None


def _overlay_gone(patch_file: str, changes: Changes) -> bool:
    """The workload's whole overlay is removed: it leaves the root kustomization, patch and all."""
    return posixpath.join(posixpath.dirname(patch_file), "kustomization.yaml") in changes.removed


def _replacements(old: Mapping[ObjectId, tuple[str, Obj]], new: Mapping[ObjectId, tuple[str, Obj]],
                  ) -> tuple[dict[ObjectId, Obj], dict[ObjectId, ObjectId]]:
    """A new binary is a new ConfigMap name: pair each added filter ConfigMap with the one it replaces
    (same filter, same namespace). Returns added -> replaced object, and replaced id -> added id."""
    gone = {key: (oid, obj) for oid, (_, obj) in old.items()
            if oid not in new and (key := _filter_configmap(oid, obj)) is not None}
    replaced: dict[ObjectId, Obj] = {}
    successor: dict[ObjectId, ObjectId] = {}
    for oid, (_, obj) in new.items():
        key = _filter_configmap(oid, obj)
        if oid not in old and key in gone:
            old_id, old_obj = gone[key]
            replaced[oid] = old_obj
            successor[old_id] = oid
    return replaced, successor


def build_review(changes: Changes, plan: Plan) -> Review:
    touched = set(changes.added + changes.changed + changes.removed) - {MANIFEST}
    planned = dict(plan.objects)
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
    new_ns = _overlay_namespaces(plan.objects)
    old_ns = {**new_ns, **_overlay_namespaces(current.items())}

    old: dict[ObjectId, tuple[str, Obj]] = {}
    new: dict[ObjectId, tuple[str, Obj]] = {}
    for file in sorted(touched):
        if file in planned:
            new[_identity(file, planned[file], new_ns)] = (file, planned[file])
        if file in current and file not in changes.added:
            old[_identity(file, current[file], old_ns)] = (file, current[file])

    replaced, successor = _replacements(old, new)
    notes = {new_id: f"replaces {old_id.name}" for old_id, new_id in successor.items()}
    notes.update({old_id: f"replaced by {new_id.name}" for old_id, new_id in successor.items()})

    def order(i: ObjectId) -> tuple[int, str, str, int]:
        # A replaced ConfigMap right after its replacement, whatever their content hashes.
        anchor = successor.get(i, i)
        return _KIND_ORDER.get(i.kind, 4), anchor.namespace, anchor.name, int(i in successor)

    found: list[ObjectChange] = []
    rolling: set[str] = set()
    leaving: set[str] = set()
    for oid in sorted(set(old) | set(new), key=lambda i: (order(i), i)):
        before, after = old.get(oid), new.get(oid)
        if before is not None and after is not None and before[1] == after[1]:
            continue  # moved between files, same object
        rolls = False
        if oid.kind in WORKLOADS:
            label = f"{oid.namespace}/{oid.name}" if oid.namespace else oid.name
            if before is not None and after is None and _overlay_gone(before[0], changes):
                leaving.add(label)
            elif _pod_annotations(before[1] if before else None) != _pod_annotations(after[1] if after else None):
                rolls = True
                rolling.add(label)
        if before is None:
            assert after is not None
            if oid in replaced:
                fields = field_changes(replaced[oid], after[1])
            else:
                fields = tuple(FieldChange(p, None, _as_text(v)) for p, v in _leaves(after[1]).items())
            found.append(ObjectChange("added", oid, after[0], fields, rolls, notes.get(oid, "")))
        elif after is None:
            note = notes.get(oid, "")
            if oid.kind in WORKLOADS and _overlay_gone(before[0], changes):
                note = ("its overlay is gone: Argo CD and Flux (prune) delete this workload unless something "
                        "else manages it")
            found.append(ObjectChange("removed", oid, before[0], (), rolls, note))
        else:
            found.append(ObjectChange("changed", oid, after[0], field_changes(before[1], after[1]), rolls))
    return Review(tuple(found), tuple(sorted(rolling)), tuple(sorted(leaving)),
                  tuple(sorted(changes.hand_edited)), tuple(sorted(unreadable)))


# ------------------------------------------------------------------------------------------ format

def _field_lines(change: FieldChange) -> list[str]:
    if change.old is None:
        return [f"{change.path}: {change.new}"] if change.new is not None else []
    if change.new is None:
        return [f"{change.path}: {change.old} (removed)"]
    one = f"{change.path}: {change.old} -> {change.new}"
    if len(one) <= _WIDE_LINE:
        return [one]
    return [f"{change.path}:", f"  - {change.old}", f"  + {change.new}"]


def _title(o: ObjectChange) -> str:
    where = "" if o.id.name == o.file else f"  ({o.file})"  # a kustomization.yaml is named by its file
    return f"{SIGN[o.state]} {o.id}{where}" + ("; pods roll" if o.rolls else "")


def _body(o: ObjectChange) -> list[str]:
    lines = [o.note] if o.note else []
    # A field that appears or disappears inside a changed object is marked; an added object's fields
    # are all new, and marking each would only add noise.
    marked = o.state == "changed" or bool(o.note)
    for change in o.fields:
        if marked and change.old is None:
            lines += [f"+ {line}" for line in _field_lines(change)]
        elif marked and change.new is None:
            lines += [f"- {change.path}: {change.old}"]
        else:
            lines += _field_lines(change)
    return lines


def _notes(r: Review) -> list[str]:
    lines = [f"note: {f} was edited by hand; render overwrites it" for f in r.hand_edited]
    lines += [f"note: {f} on disk is not one YAML object; it is shown as replaced" for f in r.unreadable]
    return lines


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def format_review(r: Review, fmt: str) -> str:
    if fmt == "github":
        # The summary first: GitHub shows only the first few annotations of a step.
        lines = [f"::notice title=wasm-gitops diff::{_escape_data(r.summary())}"]
        for o in r.objects:
            title = f"{SIGN[o.state]} {o.id}" + (" (pods roll)" if o.rolls else "")
            body = "\n".join(_body(o)) or f"{o.state}"
            lines.append(f"::notice file={_escape_property(o.file)},title={_escape_property(title)}::"
                         f"{_escape_data(body)}")
        lines += [f"::warning::{_escape_data(n)}" for n in _notes(r)]
        return "".join(line + "\n" for line in lines)
    if fmt != "text":
        raise ValueError(f"unknown review format {fmt!r}")
    lines = []
    for o in r.objects:
        lines.append(_title(o))
        lines += [f"    {line}" for line in _body(o)]
    lines += _notes(r)
    if lines:
        lines.append("")
    lines.append(r.summary())
    return "".join(line + "\n" for line in lines)
