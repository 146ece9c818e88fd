"""What each changed object does to the running mesh: the effect labels and the tables that decide them.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .model import FieldChange, ObjectId

State = Literal["added", "changed", "removed"]
Obj = Mapping[str, Any]

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
FILTER_LABEL = "wasm-gitops.io/filter"
# WasmPlugin phases in chain order; unset means just before the router.
_PHASES = {"AUTHN": 0, "AUTHZ": 1, "STATS": 2}


def meta(obj: Obj) -> Mapping[str, Any]:
    raw = obj.get("metadata")
    return raw if isinstance(raw, dict) else {}


def filter_configmap(oid: ObjectId, obj: Obj) -> tuple[str, str] | None:
    labels = meta(obj).get("labels")
    if oid.kind == "ConfigMap" and isinstance(labels, dict) and isinstance(labels.get(FILTER_LABEL), str):
        return oid.namespace, labels[FILTER_LABEL]
    return None


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


def effect(state: State, oid: ObjectId, obj: Obj, fields: Sequence[FieldChange], *, rolls: bool,
           leaves: bool) -> str:
    if oid.kind in WORKLOADS:
        if leaves:
            return PRUNED
        return PODS_ROLL if rolls else NO_MESH_EFFECT
    if filter_configmap(oid, obj) is not None:
        if state == "removed":
            return PRUNED_AFTER_ROLLOUT
        # A new binary reaches Envoy only when the pods that mount it are replaced.
        return PODS_ROLL if state == "added" else NO_MESH_EFFECT
    if oid.kind in _LISTENER_KINDS:
        return LISTENER_DRAINS  # its value is inlined into the listener's HTTP filter list
    if oid.kind in _ECDS_KINDS:
        return LISTENER_DRAINS if state != "changed" else _wasm_plugin_effect(fields)
    return NO_MESH_EFFECT


def chain_order(objects: Iterable[Obj]) -> tuple[str, ...]:
    """The order Envoy runs a service's filters in. EnvoyFilters each go in just before the router,
    lowest priority first, so ascending priority is the order; WasmPlugins run by phase, then by
    descending priority."""
    keyed: list[tuple[tuple[int, int], str]] = []
    for obj in objects:
        labels = meta(obj).get("labels") or {}
        name = str(labels.get(FILTER_LABEL) or meta(obj).get("name"))
        raw_spec = obj.get("spec")
        spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
        raw_priority = spec.get("priority")
        priority = raw_priority if isinstance(raw_priority, int) else 0
        if obj.get("kind") in _ECDS_KINDS:
            keyed.append(((_PHASES.get(str(spec.get("phase")), 3), -priority), name))
        else:
            keyed.append(((0, priority), name))
    return tuple(name for _, name in sorted(keyed))


def chain_objects(files: Mapping[str, Obj]) -> dict[str, list[Obj]]:
    """Service -> the objects of its overlay that place a filter in its chain."""
    found: dict[str, list[Obj]] = {}
    for file, obj in files.items():
        if obj.get("kind") in ("EnvoyFilter", *_ECDS_KINDS) and file.startswith("overlays/"):
            found.setdefault(file.split("/")[1], []).append(obj)
    return found
