"""What `render` would change, object by object, for a reviewer: `wasm-gitops diff` (text, github,
markdown, json, unified).

A pull request that upgrades a filter changes files in a telling pattern (a ConfigMap file now holds
a differently named ConfigMap, a deployment patch names it); a reviewer wants the objects: which
ConfigMap replaces which (binary size and sha256, never base64, and what changed inside the module),
which fields of which object change, and what each change does to the running mesh:

- `pods roll`: a pod-template annotation changed (the ConfigMap name of a new binary): new pods.
- `listener drains`: an EnvoyFilter, or the set or order of WasmPlugins, changed: istiod builds a new
  listener (its HTTP filters are part of it) and Envoy drains the connections of the old one.
- `hot`: a WasmPlugin's pluginConfig, url, sha256, pluginName or failStrategy changed: istiod sends
  the filter's configuration over ECDS and the listener stays as it is (the listener only names the
  filter), so no drain and no restart.
- `pruned after rollout`: an old ConfigMap, deleted after the new pods are healthy (PruneLast).
- `pruned`: an object that leaves the built tree (a removed service's workload and its other
  resources): the controllers delete it when they prune.
- `no mesh effect`: kustomizations (build instructions, never applied) and the controllers' objects.

This reuses the check's comparison (kept with the bytes on disk of every differing file) and the
plan's objects: nothing is rendered twice.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import html
import json
import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .clusters import ClusterChange, changes_line
from .core import ENVOY, CheckResult, _check, prepare
from .envoy.load import EnvoyStep
from .errors import Finding, UsageError
from .output import Changes
from .plan import MANIFEST, Plan
from .report import AS_GIVEN, Locator, document, escape_property, finding_line, finding_records
from .workloads import is_remote
from .yamlio import SpecSyntaxError, load_document

State = Literal["added", "changed", "removed"]
Obj = Mapping[str, Any]

SIGN: dict[State, str] = {"added": "+", "changed": "~", "removed": "-"}

PODS_ROLL = "pods roll"
LISTENER_DRAINS = "listener drains"
HOT = "hot"
PRUNED_AFTER_ROLLOUT = "pruned after rollout"
PRUNED = "pruned"
NO_MESH_EFFECT = "no mesh effect"
EFFECTS = (PODS_ROLL, LISTENER_DRAINS, HOT, PRUNED_AFTER_ROLLOUT, PRUNED, NO_MESH_EFFECT)

# Kinds a pod-template annotation change rolls (the renderer only patches Deployments today).
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
# WasmPlugin fields that decide which listeners hold the filter and where in the chain: a change is a
# new listener. Every other spec field is inside the filter's ECDS configuration.
_WASM_PLUGIN_LISTENER_FIELDS = ("spec.selector", "spec.match", "spec.phase", "spec.priority", "spec.type",
                                "spec.targetRef", "spec.targetRefs")
# The teams' other resources (a Service, ...) sort with the filter objects, before the kustomizations.
_KIND_ORDER = {"ConfigMap": 0, "Deployment": 1, "EnvoyFilter": 2, "WasmPlugin": 2, "TrafficExtension": 2, "Kustomization": 3,
               "Application": 4, "ApplicationSet": 4}
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LONG_VALUE = 100
_WIDE_LINE = 100
_FILTER_LABEL = "wasm-gitops.io/filter"
_SERVICE_LABEL = "wasm-gitops.io/service"
# Kinds kustomize's namespace transformer leaves alone (cluster-scoped).
_CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                             "PersistentVolume", "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration",
                             "MutatingWebhookConfiguration", "APIService", "IngressClass", "RuntimeClass"})
# WasmPlugin phases in chain order; unset means just before the router.
_PHASES = {"AUTHN": 0, "AUTHZ": 1, "STATS": 2}


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
class ModuleChange:
    """What changed inside a filter's WebAssembly module, next to its size and sha256."""

    abi: tuple[str | None, str | None]
    callbacks_added: tuple[str, ...]
    callbacks_removed: tuple[str, ...]
    imports_added: tuple[str, ...]
    imports_removed: tuple[str, ...]
    same_code: bool | None  # only custom sections differ; None when there is no old module

    def lines(self) -> list[str]:
        old_abi, new_abi = (v or "none" for v in self.abi)
        lines = [f"module ABI: {new_abi}" if old_abi == new_abi or self.same_code is None
                 else f"module ABI: {old_abi} -> {new_abi}"]
        if self.same_code is None:
            return lines
        if self.same_code:
            return [*lines, "module code: identical; only custom sections (names, build ids, debug info) changed"]
        for label, added, removed in (("proxy_on_* callbacks", self.callbacks_added, self.callbacks_removed),
                                      ("imports", self.imports_added, self.imports_removed)):
            if added or removed:
                lines.append(f"module {label}: " + ", ".join([*(f"+{a}" for a in added), *(f"-{r}" for r in removed)]))
            else:
                lines.append(f"module {label}: unchanged")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"abi_before": self.abi[0], "abi_after": self.abi[1], "callbacks_added": list(self.callbacks_added),
                "callbacks_removed": list(self.callbacks_removed), "imports_added": list(self.imports_added),
                "imports_removed": list(self.imports_removed), "only_custom_sections_changed": self.same_code}


@dataclass(frozen=True)
class ObjectChange:
    state: State
    id: ObjectId
    file: str
    fields: tuple[FieldChange, ...] = ()
    effect: str = NO_MESH_EFFECT
    note: str = ""  # "replaces ..." / "replaced by ..." for a filter's content-named ConfigMap
    module: ModuleChange | None = None
    group: str = ""  # "base", "service <name>" or "" (the root and the controllers' objects)

    @property
    def rolls(self) -> bool:
        return self.effect == PODS_ROLL and self.id.kind in WORKLOADS


@dataclass(frozen=True)
class Chain:
    """A service's HTTP filter chain before and after, when it changes."""

    service: str
    before: tuple[str, ...]
    after: tuple[str, ...]

    def text(self) -> str:
        return f"filter chain of {self.service}: {_arrow(self.before)} becomes {_arrow(self.after)}"


def _arrow(names: Sequence[str]) -> str:
    return " -> ".join([*names, "router"])


@dataclass(frozen=True)
class Review:
    objects: tuple[ObjectChange, ...]
    rolling: tuple[str, ...]  # namespace/name of workloads whose pods roll
    leaving: tuple[str, ...]  # workloads whose overlay is gone: the controllers prune them
    hand_edited: tuple[str, ...]
    unreadable: tuple[str, ...]  # files on disk that no longer parse as one YAML object
    chains: tuple[Chain, ...] = ()
    unlisted: tuple[str, ...] = ()  # resources that leave the tree but could not be listed, and why
    clusters: tuple[ClusterChange, ...] = ()  # with clusters: each one, with the changed files it applies

    def count(self, state: State) -> int:
        return sum(1 for o in self.objects if o.state == state)

    def with_effect(self, effect: str) -> list[ObjectChange]:
        return [o for o in self.objects if o.effect == effect]

    def summary(self) -> str:
        added = self.count("added")
        text = (f"{added} object{'' if added == 1 else 's'} added, {self.count('changed')} changed, "
                f"{self.count('removed')} removed; workloads that will roll: {', '.join(self.rolling) or 'none'}")
        drains = self.with_effect(LISTENER_DRAINS)
        if drains:
            text += f"; listeners that drain: {len(drains)} object{'' if len(drains) == 1 else 's'}"
        hot = self.with_effect(HOT)
        if hot:
            text += f"; applied without a restart: {len(hot)}"
        if self.leaving:
            text += f"; workloads leaving the tree (pruned unless managed elsewhere): {', '.join(self.leaving)}"
        if self.clusters:
            text += f"; {changes_line(self.clusters)}"
        return text

    def tree_clusters(self, tree: str) -> list[ClusterChange]:
        return [c for c in self.clusters if c.tree == tree]


def review_diff(spec_path: Path, out: Path | None = None,
                envoy: EnvoyStep = ENVOY) -> tuple[Review, CheckResult]:
    prepared = prepare(spec_path, out, keep_objects=True, envoy=envoy)
    result = _check(prepared, keep_current=True)  # the check's own comparison, on the plan just built
    root = str(prepared.spec.filter_set.root)
    review = build_review(result.changes, prepared.plan, prepared.out, root)
    return dataclasses.replace(review, clusters=result.clusters), result


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


def _meta(obj: Obj) -> Mapping[str, Any]:
    raw = obj.get("metadata")
    return raw if isinstance(raw, dict) else {}


def _identity(file: str, obj: Obj, namespaces: Mapping[str, str]) -> ObjectId:
    kind = str(obj.get("kind", "?"))
    meta = _meta(obj)
    name = meta.get("name")
    if not isinstance(name, str):  # a kustomization.yaml has no name: its file is its identity
        return ObjectId(kind, "", file)
    namespace = meta.get("namespace")
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


def _decoded(encoded: Any) -> bytes | None:
    try:
        return base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        return None


def binary_summary(encoded: Any) -> str:
    """A binaryData value as a reviewer needs it: how big the module is and which one it is."""
    raw = _decoded(encoded)
    if raw is None:
        return f"not base64 ({len(str(encoded)):,} characters)"
    return f"{len(raw):,} bytes, sha256 of the binary {hashlib.sha256(raw).hexdigest()[:12]}"


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
    labels = _meta(obj).get("labels")
    if oid.kind == "ConfigMap" and isinstance(labels, dict) and isinstance(labels.get(_FILTER_LABEL), str):
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


def _module_bytes(obj: Obj | None) -> bytes | None:
    data = obj.get("binaryData") if obj else None
    if not isinstance(data, dict) or len(data) != 1:
        return None
    return _decoded(next(iter(data.values())))


def module_change(old: bytes | None, new: bytes) -> ModuleChange | None:
    from .wasm import code_sha256, inspect_wasm  # wasmtime only when a binary changed

    after = inspect_wasm(new)
    if not after.valid:
        return None
    if old is None:
        return ModuleChange((None, after.abi_version), after.callbacks, (), after.imports, (), None)
    before = inspect_wasm(old)
    if not before.valid:
        return None
    same = code_sha256(old) == code_sha256(new) and code_sha256(new) is not None

    def delta(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(x for x in b if x not in a), tuple(x for x in a if x not in b)

    callbacks = delta(before.callbacks, after.callbacks)
    imports = delta(before.imports, after.imports)
    return ModuleChange((before.abi_version, after.abi_version), *callbacks, *imports, same)


# Istio delivers these over ECDS: the listener names the filter, its Wasm configuration comes apart
# (a TrafficExtension is what istiod turns a WasmPlugin into, from 1.30; its Wasm fields sit under
# spec.wasm, so a change there is hot, and its placement fields are the WasmPlugin's).
_ECDS_KINDS = ("WasmPlugin", "TrafficExtension")
# Inlined into the listener: an EnvoyFilter's value, and Envoy Gateway's Wasm filters, which its translator
# writes into the HCM's http_filters (LDS) and enables per route in RDS (internal/xds/translator/wasm.go),
# so any change to an EnvoyExtensionPolicy rebuilds the listener.
_LISTENER_KINDS = ("EnvoyFilter", "EnvoyExtensionPolicy")


def _wasm_plugin_effect(fields: Sequence[FieldChange]) -> str:
    spec_fields = [c for c in fields if c.path.startswith("spec.")]
    # Whole field names: spec.match is a listener field, Higress's spec.matchRules is configuration.
    if any(c.path == f or c.path.startswith((f + ".", f + "[")) for c in spec_fields for f in _WASM_PLUGIN_LISTENER_FIELDS):
        return LISTENER_DRAINS
    return HOT if spec_fields else NO_MESH_EFFECT


def _effect(state: State, oid: ObjectId, obj: Obj, fields: Sequence[FieldChange], *, rolls: bool,
            leaves: bool) -> str:
    if oid.kind in WORKLOADS:
        if leaves:
            return PRUNED
        return PODS_ROLL if rolls else NO_MESH_EFFECT
    if _filter_configmap(oid, obj) is not None:
        if state == "removed":
            return PRUNED_AFTER_ROLLOUT
        # A new binary reaches Envoy only when the pods that mount it are replaced.
        return PODS_ROLL if state == "added" else NO_MESH_EFFECT
    if oid.kind in _LISTENER_KINDS:
        return LISTENER_DRAINS  # its value is inlined into the listener's HTTP filter list
    if oid.kind in _ECDS_KINDS:
        return LISTENER_DRAINS if state != "changed" else _wasm_plugin_effect(fields)
    return NO_MESH_EFFECT


def _chain(objects: Iterable[Obj]) -> tuple[str, ...]:
    """The order Envoy runs a service's filters in. EnvoyFilters each go in just before the router,
    lowest priority first, so ascending priority is the order; WasmPlugins run by phase, then by
    descending priority."""
    keyed: list[tuple[tuple[int, int], str]] = []
    for obj in objects:
        labels = _meta(obj).get("labels") or {}
        name = str(labels.get(_FILTER_LABEL) or _meta(obj).get("name"))
        raw_spec = obj.get("spec")
        spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
        raw_priority = spec.get("priority")
        priority = raw_priority if isinstance(raw_priority, int) else 0
        if obj.get("kind") in _ECDS_KINDS:
            keyed.append(((_PHASES.get(str(spec.get("phase")), 3), -priority), name))
        else:
            keyed.append(((0, priority), name))
    return tuple(name for _, name in sorted(keyed))


def _chains(old_files: Mapping[str, Obj], new_files: Mapping[str, Obj]) -> tuple[Chain, ...]:
    def by_service(files: Mapping[str, Obj]) -> dict[str, list[Obj]]:
        found: dict[str, list[Obj]] = {}
        for file, obj in files.items():
            if obj.get("kind") in ("EnvoyFilter", *_ECDS_KINDS) and file.startswith("overlays/"):
                found.setdefault(file.split("/")[1], []).append(obj)
        return found

    before, after = by_service(old_files), by_service(new_files)
    chains = []
    for service in sorted(set(before) | set(after)):
        a, b = _chain(before.get(service, ())), _chain(after.get(service, ()))
        if a != b and a and b:  # a service that comes or goes shows its filters as objects already
            chains.append(Chain(service, a, b))
    return tuple(chains)


def _kustomize_objects(directory: str) -> list[Obj] | str:
    """The objects `kubectl kustomize` builds from one local resource directory, or why it could not."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return "kubectl is not on PATH, so its objects cannot be listed"
    try:
        # No plugins, no Helm, no network beyond what the resource itself names: kustomize's defaults.
        proc = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"kubectl kustomize failed: {e}"
    if proc.returncode != 0:
        return f"kubectl kustomize failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
    # kustomize separates its objects with a bare --- line; every value inside an object is indented,
    # so the line cannot occur within one.
    found: list[Obj] = []
    for text in re.split(r"^---$", proc.stdout, flags=re.MULTILINE):
        if not text.strip():
            continue
        try:
            obj = load_document(text, directory).data
        except SpecSyntaxError as e:
            return f"kubectl kustomize printed what is not YAML: {e.findings[0].message if e.findings else e}"
        if isinstance(obj, dict):
            found.append(obj)
    return found


def _leaving_resources(changes: Changes, current: Mapping[str, Obj], plan_files: Mapping[str, Obj],
                       out: Path, root: str) -> tuple[list[tuple[str, str, Obj]], list[str]]:
    """Objects of the teams' resources that leave the built tree: those an overlay no longer lists
    (all of them when the overlay itself is gone). Returns (overlay kustomization, resource, object)
    triples, and the resources that could not be listed, with why."""
    found: list[tuple[str, str, Obj]] = []
    unlisted: list[str] = []
    real_root = os.path.realpath(root)
    for file, obj in sorted(current.items()):
        if not (file.startswith("overlays/") and posixpath.basename(file) == "kustomization.yaml"):
            continue
        if file not in changes.removed and file not in changes.changed:
            continue
        old = [r for r in obj.get("resources") or [] if isinstance(r, str)]
        new_obj = plan_files.get(file)
        new = {r for r in (new_obj.get("resources") or []) if isinstance(r, str)} if new_obj else set()
        namespace = obj.get("namespace") if isinstance(obj.get("namespace"), str) else None
        overlay = posixpath.dirname(file)
        for resource in old:
            if resource in new or ("/" not in resource and resource.endswith(".yaml")):
                continue  # still there, or one of the overlay's own generated files
            if is_remote(resource):
                unlisted.append(f"{resource} (of {overlay}): remote; its objects leave the tree too")
                continue
            directory = os.path.realpath(os.path.join(out, overlay, resource))
            if not (directory == real_root or directory.startswith(real_root + os.sep)):
                unlisted.append(f"{resource} (of {overlay}): outside the repository, not read")
                continue
            objects = _kustomize_objects(directory)
            if isinstance(objects, str):
                unlisted.append(f"{resource} (of {overlay}): {objects}")
                continue
            for item in objects:
                kind = str(item.get("kind", "?"))
                meta = dict(_meta(item))
                if namespace is not None and kind not in _CLUSTER_SCOPED:
                    meta["namespace"] = namespace  # what the overlay's namespace transformer did
                found.append((file, resource, {**item, "metadata": meta}))
    return found, unlisted


def build_review(changes: Changes, plan: Plan, out: Path = Path("."), root: str = ".") -> Review:
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

    # The workload and other objects of resources an overlay drops: they leave the built tree.
    leaving_objects, unlisted = _leaving_resources(changes, current, planned, out, root)
    leaving_ids: dict[ObjectId, tuple[str, str, Obj]] = {}
    for kfile, resource, obj in leaving_objects:
        oid = _identity(kfile, obj, {})
        if oid not in new:
            leaving_ids.setdefault(oid, (kfile, resource, obj))

    replaced, successor = _replacements(old, new)
    notes = {new_id: f"replaces {old_id.name}" for old_id, new_id in successor.items()}
    notes.update({old_id: f"replaced by {new_id.name}" for old_id, new_id in successor.items()})

    def order(i: ObjectId) -> tuple[int, str, str, int]:
        # A replaced ConfigMap right after its replacement, whatever their content hashes.
        anchor = successor.get(i, i)
        return _KIND_ORDER.get(i.kind, 2), anchor.namespace, anchor.name, int(i in successor)

    found: list[ObjectChange] = []
    rolling: set[str] = set()
    leaving: set[str] = set()
    for oid in sorted(set(old) | set(new) | set(leaving_ids), key=lambda i: (order(i), i)):
        before, after = old.get(oid), new.get(oid)
        if before is not None and after is not None and before[1] == after[1]:
            continue  # moved between files, same object
        label = f"{oid.namespace}/{oid.name}" if oid.namespace else oid.name
        if before is None and after is None:  # only in the dropped resources
            kfile, resource, obj = leaving_ids[oid]
            if oid.kind in WORKLOADS:
                leaving.add(label)
            found.append(ObjectChange("removed", oid, posixpath.normpath(posixpath.join(posixpath.dirname(kfile),
                                                                                        resource)), (),
                                      PRUNED, "leaves the tree with its overlay's resources: Argo CD and Flux "
                                      "(prune) delete it unless something else manages it", group=_group(kfile)))
            continue
        rolls = gone = False
        if oid.kind in WORKLOADS:
            if before is not None and after is None and _overlay_gone(before[0], changes):
                gone = True
                leaving.add(label)
            elif _pod_annotations(before[1] if before else None) != _pod_annotations(after[1] if after else None):
                rolls = True
                rolling.add(label)
        module = None
        if before is None:
            assert after is not None
            if oid in replaced:
                fields = field_changes(replaced[oid], after[1])
            else:
                fields = tuple(FieldChange(p, None, _as_text(v)) for p, v in _leaves(after[1]).items())
            binary = _module_bytes(after[1])
            if binary is not None and _filter_configmap(oid, after[1]) is not None:
                module = module_change(_module_bytes(replaced.get(oid)), binary)
            effect = _effect("added", oid, after[1], fields, rolls=rolls, leaves=False)
            found.append(ObjectChange("added", oid, after[0], fields, effect, notes.get(oid, ""), module,
                                      _group(after[0])))
        elif after is None:
            note = notes.get(oid, "")
            if gone:
                note = ("its overlay is gone: Argo CD and Flux (prune) delete this workload unless something "
                        "else manages it")
            effect = _effect("removed", oid, before[1], (), rolls=rolls, leaves=gone)
            found.append(ObjectChange("removed", oid, before[0], (), effect, note, group=_group(before[0])))
        else:
            fields = field_changes(before[1], after[1])
            effect = _effect("changed", oid, after[1], fields, rolls=rolls, leaves=False)
            found.append(ObjectChange("changed", oid, after[0], fields, effect, group=_group(after[0])))

    old_files: dict[str, Obj] = {f: o for f, o in planned.items() if f not in changes.added and f not in touched}
    old_files.update({f: o for f, o in current.items() if f in touched})
    new_files: dict[str, Obj] = dict(planned)
    return Review(tuple(found), tuple(sorted(rolling)), tuple(sorted(leaving)),
                  tuple(sorted(changes.hand_edited)), tuple(sorted(unreadable)),
                  _chains(old_files, new_files), tuple(unlisted))


# ------------------------------------------------------------------------------------------ text

def _field_lines(change: FieldChange) -> list[str]:
    if change.old is None:
        return [f"{change.path}: {change.new}"] if change.new is not None else []
    if change.new is None:
        return [f"{change.path}: {change.old} (removed)"]
    one = f"{change.path}: {change.old} -> {change.new}"
    if len(one) <= _WIDE_LINE:
        return [one]
    return [f"{change.path}:", f"  - {change.old}", f"  + {change.new}"]


def _file_of(o: ObjectChange, where: Locator) -> str:
    return where.tree_file(o.file)


def _title(o: ObjectChange, where: Locator = AS_GIVEN) -> str:
    # A kustomization.yaml is named by its file.
    shown = "" if o.id.name == o.file else f"  ({_file_of(o, where)})"
    return f"{SIGN[o.state]} {o.id}{shown}; {o.effect}"


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
    if o.module is not None:
        lines += o.module.lines()
    return lines


def _notes(r: Review, where: Locator = AS_GIVEN) -> list[str]:
    lines = [f"note: {where.tree_file(f)} was edited by hand; render overwrites it" for f in r.hand_edited]
    lines += [f"note: {where.tree_file(f)} on disk is not one YAML object; it is shown as replaced"
              for f in r.unreadable]
    lines += [f"note: leaves the tree, not listed: {u}" for u in r.unlisted]
    return lines


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def format_review(r: Review, fmt: str, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (),
                  clean: bool | None = None) -> str:
    if fmt == "json":
        return review_json(r, where, warnings, clean)
    if fmt == "github":
        from .report import github_findings

        # The summary first: GitHub shows only the first few annotations of a step.
        lines = [f"::notice title=wasm-gitops diff::{_escape_data(r.summary())}"]
        for o in r.objects:
            title = f"{SIGN[o.state]} {o.id} ({o.effect})"
            body = "\n".join(_body(o)) or f"{o.state}"
            lines.append(f"::notice file={escape_property(where.tree_file(o.file, annotation=True))},"
                         f"title={escape_property(title)}::{_escape_data(body)}")
        lines += [f"::notice title=filter chain::{_escape_data(c.text())}" for c in r.chains]
        lines += [f"::warning::{_escape_data(n)}" for n in _notes(r, where)]
        return lines[0] + "\n" + github_findings(warnings, where) + "".join(line + "\n" for line in lines[1:])
    if fmt != "text":
        raise ValueError(f"unknown review format {fmt!r}")
    lines = []
    for o in r.objects:
        lines.append(_title(o, where))
        lines += [f"    {line}" for line in _body(o)]
    lines += [c.text() for c in r.chains]
    lines += _notes(r, where)
    if lines:
        lines.append("")
    lines.append(r.summary())
    return "".join(line + "\n" for line in lines)


def review_json(r: Review, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (),
                clean: bool | None = None) -> str:
    return document({
        "valid": True,
        # The check's own verdict when there is one: it also knows about an interrupted render.
        "clean": (not r.objects and not r.hand_edited and not r.unreadable) if clean is None else clean,
        "summary": {"added": r.count("added"), "changed": r.count("changed"), "removed": r.count("removed"),
                    "workloads_that_roll": list(r.rolling), "workloads_leaving": list(r.leaving),
                    "effects": {e: len(r.with_effect(e)) for e in EFFECTS}},
        "objects": [{"state": o.state, "kind": o.id.kind, "namespace": o.id.namespace, "name": o.id.name,
                     "file": where.tree_file(o.file), "effect": o.effect, "note": o.note,
                     "fields": [{"path": c.path, "old": c.old, "new": c.new} for c in o.fields],
                     "module": o.module.as_dict() if o.module else None} for o in r.objects],
        "chains": [{"service": c.service, "before": list(c.before), "after": list(c.after)} for c in r.chains],
        "edited_by_hand": [where.tree_file(f) for f in r.hand_edited],
        "unreadable": [where.tree_file(f) for f in r.unreadable],
        "unlisted": list(r.unlisted),
        "problems": finding_records(warnings, where),
        **({"clusters": [c.as_dict() for c in r.clusters]} if r.clusters else {}),
    })


# ------------------------------------------------------------------------------------------ markdown

def marker(part: int) -> str:
    """The first line of each part: the CI recipe finds its own comments by it, to update them in place."""
    return f"<!-- wasm-gitops diff part {part} -->"

_NAMES_IN_TABLE = 10


def _h(text: str) -> str:
    """Text outside code blocks: no HTML from a pull request's names, no table or emphasis breaks."""
    return html.escape(text, quote=True).replace("|", "&#124;").replace("*", "&#42;").replace("_", "&#95;") \
        .replace("`", "&#96;").replace("[", "&#91;").replace("~", "&#126;")  # ~ is GFM strikethrough


def _code(text: str) -> str:
    return f"<code>{_h(text)}</code>"


def _fence(lines: Sequence[str]) -> str:
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def _line(text: str) -> str:
    # One value, one line: a newline in a value could otherwise start a line markdown reads as HTML.
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _diff_lines(o: ObjectChange) -> list[str]:
    lines = [f"# {o.note}"] if o.note else []
    for raw in o.fields:
        change = FieldChange(_line(raw.path), None if raw.old is None else _line(raw.old),
                             None if raw.new is None else _line(raw.new))
        if change.old is None and change.new is not None:
            lines.append(f"+ {change.path}: {change.new}")
        elif change.new is None and change.old is not None:
            lines.append(f"- {change.path}: {change.old}")
        elif change.old is not None and change.new is not None:
            lines += [f"  {change.path}:", f"-   {change.old}", f"+   {change.new}"]
    if o.module is not None:
        lines += [f"# {line}" for line in o.module.lines()]
    return lines


def _object_block(o: ObjectChange, where: Locator, budget: int | None = None) -> str:
    head = f"**{_h(SIGN[o.state])} {_h(o.id.kind)}** {_code(str(o.id).split(' ', 1)[1])} · **{o.effect}**"
    if o.id.name != o.file:
        head += f" · {_code(_file_of(o, where))}"
    lines = _diff_lines(o)
    if not lines:
        return head + "\n\n"
    fence = _fence(lines)
    text = f"{head}\n\n{fence}diff\n" + "".join(f"{line}\n" for line in lines) + f"{fence}\n\n"
    if budget is None or len(text) <= budget:
        return text
    # One object bigger than a whole comment: keep the lines that fit and say how many were left out;
    # the fence is still closed, so what follows renders as it should.
    kept: list[str] = []
    size = len(head) + 2 * len(fence) + 80
    for line in lines:
        if size + len(line) + 1 > budget:
            break
        kept.append(line)
        size += len(line) + 1
    kept.append(f"# ... {len(lines) - len(kept):,} more lines left out; run wasm-gitops diff to see them")
    return f"{head}\n\n{fence}diff\n" + "".join(f"{line}\n" for line in kept) + f"{fence}\n\n"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(_code(i) for i in items[:_NAMES_IN_TABLE])
    more = len(items) - _NAMES_IN_TABLE
    return shown + (f" and {more:,} more" if more > 0 else "") if items else "none"


def _summary_table(r: Review) -> str:
    def objects(effect: str) -> list[str]:
        return [str(o.id) for o in r.with_effect(effect)]

    rows = [
        ("objects added / changed / removed", f"{r.count('added'):,} / {r.count('changed'):,} / {r.count('removed'):,}"),
        (f"workloads whose pods roll ({len(r.rolling):,})", _names(r.rolling)),
        (f"listeners that drain ({len(objects(LISTENER_DRAINS)):,} objects)", _names(objects(LISTENER_DRAINS))),
        (f"applied without a restart, hot ({len(objects(HOT)):,})", _names(objects(HOT))),
        (f"pruned after rollout ({len(objects(PRUNED_AFTER_ROLLOUT)):,})", _names(objects(PRUNED_AFTER_ROLLOUT))),
        (f"leaving the tree, pruned ({len(objects(PRUNED)):,})", _names(objects(PRUNED))),
    ]
    return "| what | objects |\n|---|---|\n" + "".join(f"| {_h(a)} | {b} |\n" for a, b in rows)


def _cluster_table(r: Review) -> str:
    """With clusters: one row per cluster in rollout order, what it applies and whether it changes."""
    rows = "".join(f"| {_h(c.wave)} | {_code(c.name)} | {_code('trees/' + c.tree)} | "
                   f"{f'{len(c.files):,} file' + ('' if len(c.files) == 1 else 's') if c.changes else 'no change'} |\n"
                   for c in r.clusters)
    return "| wave | cluster | applies | changes |\n|---|---|---|---|\n" + rows


def _head(r: Review, where: Locator, warnings: Sequence[Finding], costs: Mapping[str, str]) -> str:
    text = f"{_summary_table(r)}\n"
    if r.clusters:
        text += f"{_cluster_table(r)}\n"
    if r.chains:
        text += "".join(f"- filter chain of {_code(c.service)}: {_code(_arrow(c.before))} becomes "
                        f"{_code(_arrow(c.after))}\n" for c in r.chains) + "\n"
    # One line per changed service that the cost report measured (wasm-gitops cost --json).
    changed = [name for g, _ in _groups(r) if (name := g.removeprefix("service ")) != g and name in costs]
    if changed:
        text += "".join(f"- {_code(name)}: {_h(costs[name])}\n" for name in changed) + "\n"
    notes = [*(finding_line(f, where) for f in warnings), *_notes(r, where)]
    if notes:
        text += "".join(f"- {_h(n)}\n" for n in notes) + "\n"
    return text


def _groups(r: Review) -> list[tuple[str, list[ObjectChange]]]:
    found: dict[str, list[ObjectChange]] = {}
    for o in r.objects:
        found.setdefault(o.group, []).append(o)

    def key(group: str) -> tuple[int, str]:
        # Shared parts first, then each tree in the order of its first cluster, then each cluster's own.
        if group.startswith("tree "):
            order = [c.tree for c in r.clusters]
            tree = group.removeprefix("tree ")
            return (2, f"{order.index(tree) if tree in order else len(order):06d}")
        if group.startswith("cluster "):
            return (3, group)
        return (0 if group == "base" else 4 if group == "" else 1, group)

    return [(g, found[g]) for g in sorted(found, key=key)]


def _group_title(group: str, objects: Sequence[ObjectChange], r: Review | None = None) -> str:
    name = {"base": "base", "": "root kustomization and controllers"}.get(group, group)
    if r is not None and group.startswith("tree "):
        members = r.tree_clusters(group.removeprefix("tree "))
        waves = ", ".join(dict.fromkeys(c.wave for c in members))
        name += f" (cluster{'' if len(members) == 1 else 's'} {', '.join(c.name for c in members)}; wave {waves})"
    effects = sorted({o.effect for o in objects}, key=EFFECTS.index)
    return (f"{_h(name)}: {len(objects):,} object{'' if len(objects) == 1 else 's'} "
            f"({_h(', '.join(effects))})")


def markdown_parts(r: Review, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (), *,
                   max_chars: int = 65_536, split: bool = False, costs: Mapping[str, str] | None = None) -> list[str]:
    """The pull request comment: the title and summary table outside any fold, then one <details>
    per group (base, each service, the root) of per-object ```diff blocks. Each part stays within
    max_chars; a part ends between objects, never inside a block. Without `split` the comment is one
    part, cut after the last object that fits, with a line saying what was left out."""
    reserve = 400  # the title, the closing of an open fold, the "left out" line
    budget = max_chars - reserve
    head = _head(r, where, warnings, costs or {})
    if not r.objects and not r.hand_edited and not r.unreadable:
        head = "No change: the committed render matches filters.yaml.\n\n" + head
    parts: list[list[str]] = [[head]]
    sizes = [len(head)]
    left_out: list[ObjectChange] = []
    open_group: str | None = None
    close = "</details>\n\n"
    for group, objects in _groups(r):
        for index, o in enumerate(objects):
            if left_out:  # once cut, cut everything after: the comment reads in order
                left_out.append(o)
                continue
            block = _object_block(o, where, budget - 1000)
            opening = ("<details>\n<summary>" + _group_title(group, objects, r)
                       + (" (continued)" if index else "") + "</summary>\n\n")
            need = len(block) + (len(opening) if open_group != group else 0) + len(close)
            if sizes[-1] + need > budget and sizes[-1] > 0:
                if not split:
                    left_out.append(o)
                    continue
                if open_group is not None:
                    parts[-1].append(close)
                parts.append([])
                sizes.append(0)
                open_group = None
            if open_group != group:
                if open_group is not None:
                    parts[-1].append(close)
                    sizes[-1] += len(close)
                parts[-1].append(opening)
                sizes[-1] += len(opening)
                open_group = group
            parts[-1].append(block)
            sizes[-1] += len(block)
    if open_group is not None:
        parts[-1].append(close)
    if left_out:
        groups = sorted({o.group or "root" for o in left_out})
        parts[-1].append(f"**{len(left_out):,} more object{'' if len(left_out) == 1 else 's'} left out** "
                         f"({_h(', '.join(groups[:5]))}{' ...' if len(groups) > 5 else ''}) to stay within "
                         f"{max_chars:,} characters: run {_code('wasm-gitops diff')} locally, or post the "
                         f"comment in parts with {_code('--split')}.\n")
    total = len(parts)
    out = []
    for number, chunks in enumerate(parts, 1):
        title = "## wasm-gitops diff" + (f" (part {number} of {total})" if total > 1 else "")
        if number == 1:
            title += f"\n\n{_h(_short_summary(r))}"
        out.append(f"{marker(number)}\n{title}\n\n" + "".join(chunks).rstrip("\n") + "\n")
    return out


def _short_summary(r: Review) -> str:
    added = r.count("added")
    return (f"{added:,} object{'' if added == 1 else 's'} added, {r.count('changed'):,} changed, "
            f"{r.count('removed'):,} removed; {len(r.rolling):,} workload{'' if len(r.rolling) == 1 else 's'} "
            "will roll.")


def markdown_problems(items: Sequence[Finding], where: Locator = AS_GIVEN) -> str:
    errors = [f for f in items if f.severity == "error"]
    lines = "".join(f"- {_code(finding_line(f, where))}\n" for f in items)
    return (f"{marker(1)}\n## wasm-gitops diff\n\n**The spec is invalid** ({len(errors):,} "
            f"problem{'' if len(errors) == 1 else 's'}): nothing can be rendered until it is fixed.\n\n{lines}")


_PART = re.compile(r"part-\d+-of-\d+\.md")


def check_split_dir(directory: Path) -> None:
    """The parts go into a directory of their own: never over files someone else put there."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise UsageError(f"{directory}: not a directory; --split needs a new or empty directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise UsageError(f"{directory}: not empty; --split writes part-1-of-N.md ... into a new or empty "
                         "directory")


def write_parts(directory: Path, parts: Sequence[str]) -> list[Path]:
    check_split_dir(directory)
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for number, text in enumerate(parts, 1):
            path = directory / f"part-{number}-of-{len(parts)}.md"
            with open(path, "x", encoding="utf-8", newline="\n") as fh:  # "x": the directory was empty
                fh.write(text)
            written.append(path)
    except OSError as e:
        raise UsageError(f"{directory}: cannot write the comment there: {e.strerror or e}") from None
    return written


# ------------------------------------------------------------------------------------------ unified

_LONG = 400  # a line longer than this (base64 of a binary) is summarised, not printed


def _display_lines(data: bytes) -> list[str]:
    out = []
    for line in data.decode("utf-8", "replace").splitlines(keepends=True):
        if len(line) > _LONG:
            head = line[: line.find(":") + 1] if ":" in line[:120] else ""
            value = line[len(head):].strip()
            decoded = _decoded(value)
            if decoded is not None:
                line = (f"{head} <{len(value):,} characters of base64: {len(decoded):,} bytes, sha256 of the "
                        f"binary {hashlib.sha256(decoded).hexdigest()[:12]}...>\n")
            else:
                line = (f"{head} <{len(value):,} characters, sha256 of this text "
                        f"{hashlib.sha256(value.encode()).hexdigest()[:12]}...>\n")
        out.append(line)
    return out


def unified_diff(spec_path: Path, out: Path | None = None,
                 envoy: EnvoyStep = ENVOY) -> tuple[str, CheckResult]:
    from difflib import unified_diff as unified  # only diff needs it: not imported by every command

    prepared = prepare(spec_path, out, envoy=envoy)
    result = _check(prepared, keep_current=True)
    chunks: list[str] = []
    ch = result.changes
    # The manifest's hash lines last: they restate the files above, they are not what to review.
    for rel in sorted(ch.added + ch.changed + ch.removed, key=lambda p: (p == MANIFEST, p)):
        old = ch.current.get(rel, b"")
        new = prepared.plan.files.get(rel, b"")
        a = f"a/{rel}" if rel not in ch.added else "/dev/null"
        b = f"b/{rel}" if rel not in ch.removed else "/dev/null"
        chunks.extend(unified(_display_lines(old), _display_lines(new), a, b))
    return "".join(chunks), result


__all__ = ["EFFECTS", "Chain", "FieldChange", "ModuleChange", "ObjectChange", "ObjectId", "Review",
           "build_review", "format_review", "markdown_parts", "review_diff", "unified_diff"]
