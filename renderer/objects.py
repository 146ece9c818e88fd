"""Kubernetes and Istio objects, built as plain data. The one emitter in yamlio dumps them."""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from . import istio_versions
from .model import MOUNT_DIR, Filter, FilterSet, Service, ServiceFilter
from .wasm import ANNOTATION_LIMIT, last_applied_annotations_size

Obj = dict[str, Any]

MANAGED_BY = {"app.kubernetes.io/managed-by": "wasm-gitops"}
VOLUME_NAME = "wasm-filters"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
LEGACY_HCM = "envoy.http_connection_manager"
LEGACY_ROUTER = "envoy.router"
WASM_FILTER = "envoy.filters.http.wasm"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"

# Argo CD: ConfigMaps go in an earlier wave than the workloads that mount them, and an old
# content-named ConfigMap is pruned only after the new pods are healthy (PruneLast).
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
SYNC_OPTIONS = "argocd.argoproj.io/sync-options"


def configmap_name(f: Filter) -> str:
    # Content-addressed like kustomize's generator hash: a new binary is a new name, so the
    # annotation changes and the pods roll. 10 hex digits keep collisions out of reach per filter.
    return f"wasm-{f.name}-{f.binary.sha256[:10]}"


def configmap(f: Filter, namespace: str, encoded: str) -> Obj:
    obj = _configmap(f, namespace, encoded, "PruneLast=true")
    # Client-side apply would store the whole object in last-applied-configuration; when that takes
    # the annotations past the API server's limit, Argo CD must apply this one server-side.
    if last_applied_annotations_size(obj) > ANNOTATION_LIMIT:
        obj["metadata"]["annotations"][SYNC_OPTIONS] = "PruneLast=true,ServerSideApply=true"
    return obj


def _configmap(f: Filter, namespace: str, encoded: str, options: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(f),
            "namespace": namespace,
            "labels": {**MANAGED_BY, "wasm-gitops.io/filter": f.name},
            "annotations": {
                SYNC_WAVE: "-1",
                SYNC_OPTIONS: options,
                "wasm-gitops.io/sha256": f.binary.sha256,
            },
        },
        "immutable": True,
        "binaryData": {f.file_name: encoded},
    }


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def user_volume(service: Service) -> str:
    """sidecar.istio.io/userVolume: a JSON map of volume name -> volume source.

    Istio's injection template ranges over this JSON as key -> value and writes `name: <key>`
    followed by the value, so the map form names the volume exactly (a JSON list only works by the
    accident of a duplicated `name` key). One projected volume gathers every filter's ConfigMap, so
    several filters land side by side under one mount, never in patches that overwrite each other.
    """
    volumes: Obj = {}
    if service.mounts_configmaps:
        sources = [
            {"configMap": {"name": configmap_name(sf.filter),
                           "items": [{"key": sf.filter.file_name, "path": sf.filter.file_name}]}}
            for sf in service.filters if sf.filter.in_configmap
        ]
        volumes[VOLUME_NAME] = {"projected": {"sources": sources}}
    for f in service.image_volumes:
        volumes[image_volume_name(f)] = {"image": image_volume_source(f)}
    return _compact(volumes)


def image_volume_name(f: Filter) -> str:
    return f"wasm-{f.name}"


def image_volume_source(f: Filter) -> Obj:
    """A Kubernetes image volume (beta from 1.33): the kubelet pulls the image with the node's
    credentials and mounts its layers read-only. Pinned by digest, the image never changes under a
    running pod, so IfNotPresent saves the pull of every restart."""
    assert f.image is not None
    return {"reference": f.image.pinned, "pullPolicy": "IfNotPresent"}


@functools.cache  # the same for every service: encode it once
def user_volume_mount() -> str:
    return _compact({VOLUME_NAME: {"mountPath": MOUNT_DIR, "readOnly": True}})


def _user_volume_mounts(service: Service) -> str:
    if not service.image_volumes:
        return user_volume_mount()
    mounts: Obj = {VOLUME_NAME: {"mountPath": MOUNT_DIR, "readOnly": True}} if service.mounts_configmaps else {}
    for f in service.image_volumes:
        mounts[image_volume_name(f)] = {"mountPath": f.image_mount_dir, "readOnly": True}
    return _compact(mounts)


def deployment_patch(service: Service) -> Obj:
    annotations: dict[str, str] = {}
    if service.mounts_configmaps or service.image_volumes:
        annotations["sidecar.istio.io/userVolume"] = user_volume(service)
        annotations["sidecar.istio.io/userVolumeMount"] = _user_volume_mounts(service)
    if service.proxy_log_level:
        annotations["sidecar.istio.io/componentLogLevel"] = ",".join(
            f"{k}:{v}" for k, v in service.proxy_log_level)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": service.deployment},
        "spec": {"template": {"metadata": {"annotations": annotations}}},
    }


def object_name(service: Service, f: Filter) -> str:
    return f"{service.name}-{f.name}"


def _filter_metadata(service: Service, f: Filter) -> Obj:
    """Metadata of the object that attaches filter f to service (EnvoyFilter or WasmPlugin)."""
    return {"name": object_name(service, f), "namespace": service.namespace,
            "labels": {**MANAGED_BY, "wasm-gitops.io/filter": f.name, "wasm-gitops.io/service": service.name}}


def envoy_filter(fs: FilterSet, service: Service, index: int, sf: ServiceFilter) -> Obj:
    f = sf.filter
    legacy = istio_versions.supports(fs.istio, "wasm.legacy_value")
    hcm, router = (LEGACY_HCM, LEGACY_ROUTER) if legacy else (HCM, ROUTER)
    spec: Obj = {"workloadSelector": {"labels": dict(service.selector)}}
    if istio_versions.supports(fs.istio, "EnvoyFilter.priority"):
        # Each filter is inserted right before the router; applying them in list order therefore
        # leaves them in list order. priority makes that order explicit instead of creation time.
        spec["priority"] = index
    spec["configPatches"] = [{
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": service.context,
            "listener": {"filterChain": {"filter": {"name": hcm, "subFilter": {"name": router}}}},
        },
        "patch": {
            "operation": "INSERT_BEFORE",
            "value": _legacy_value(f, sf.config) if legacy else _typed_value(fs, f, sf.config),
        },
    }]
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": _filter_metadata(service, f), "spec": spec}


def _typed_value(fs: FilterSet, f: Filter, config: str | None) -> Obj:
    plugin: Obj = {"name": f.name, "root_id": f.root_id}
    if config is not None:
        plugin["configuration"] = {"@type": STRING_VALUE, "value": config}
    plugin["vm_config"] = {
        "vm_id": f.vm_id,
        "runtime": f.runtime,
        "allow_precompiled": f.allow_precompiled,
        "code": {"local": {"filename": f.mounted_path}},
    }
    plugin["fail_open"] = f.fail_open
    if istio_versions.supports(fs.istio, "wasm.typed_config_direct"):
        # istiod knows the Wasm proto and validates the whole value when the object is applied.
        return {"name": WASM_FILTER, "typed_config": {"@type": WASM_TYPE, "config": plugin}}
    # Istio 1.7's istiod cannot resolve the Wasm type itself; TypedStruct defers it to Envoy.
    return {"name": WASM_FILTER, "typed_config": {"@type": TYPED_STRUCT, "type_url": WASM_TYPE,
                                                  "value": {"config": plugin}}}


def _legacy_value(f: Filter, config: str | None) -> Obj:
    # Istio <= 1.6 (the ASM documentation's shape): the deprecated `config` Struct, converted by
    # Envoy from JSON names, and a plain string configuration (before it became an Any).
    plugin: Obj = {"name": f.name, "rootId": f.root_id}
    if config is not None:
        plugin["configuration"] = config
    plugin["vmConfig"] = {
        "vmId": f.vm_id,
        "runtime": f.runtime,
        "allowPrecompiled": f.allow_precompiled,
        "code": {"local": {"filename": f.mounted_path}},
    }
    return {"name": WASM_FILTER, "config": {"config": plugin}}


_MATCH_MODE = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT"}


def wasm_plugin_fields(fs: FilterSet, f: Filter, url: str, config: str | None, countdown: int) -> Obj:
    """A WasmPlugin's module, place in the chain, configuration and failure handling: the same for a
    sidecar's and a gateway's."""
    spec: Obj = {"url": url, "sha256": f.pulled_sha256}
    if f.root_id:
        spec["pluginName"] = f.root_id
    if f.phase and f.phase != "UNSPECIFIED_PHASE":
        # Unset means "at the end of the chain, before the router": the EnvoyFilter's place.
        spec["phase"] = f.phase
    # Higher priority runs first within a phase: count down so the chain follows the list.
    spec["priority"] = f.priority if f.priority is not None else countdown
    if config is not None:
        spec["pluginConfig"] = json.loads(config)
    if istio_versions.supports(fs.istio, "WasmPlugin.failStrategy"):
        spec["failStrategy"] = "FAIL_OPEN" if f.fail_open else "FAIL_CLOSE"
    return spec


def wasm_plugin(fs: FilterSet, service: Service, index: int, sf: ServiceFilter) -> Obj:
    """extensions.istio.io/v1alpha1 WasmPlugin (Istio >= 1.12): istio-agent loads the module from the
    same mounted file (file://) or pulls it (oci://); fields appear only where the target has them."""
    f = sf.filter
    spec: Obj = {"selector": {"matchLabels": dict(service.selector)}}
    spec.update(wasm_plugin_fields(fs, f, f.oci_url or f"file://{f.mounted_path}", sf.config,
                                    len(service.filters) - index))
    mode = _MATCH_MODE.get(service.context)
    if mode and istio_versions.supports(fs.istio, "WasmPlugin.match"):
        spec["match"] = [{"mode": mode}]
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": _filter_metadata(service, f), "spec": spec}


def traffic_extension(fs: FilterSet, service: Service, index: int, sf: ServiceFilter) -> Obj:
    """extensions.istio.io/v1alpha1 TrafficExtension (Istio >= 1.30), WasmPlugin's successor: the Wasm
    settings move under `wasm`, while selector, phase, priority and match stay at the top. Istio orders
    TrafficExtensions of a phase by priority, higher first (pilot/pkg/model/push_context.go
    sortByPriority), like WasmPlugins, so the same countdown keeps the listed order."""
    f = sf.filter
    wasm: Obj = {"url": f.oci_url or f"file://{f.mounted_path}", "sha256": f.pulled_sha256}
    if f.root_id:
        wasm["pluginName"] = f.root_id
    if sf.config is not None:
        wasm["pluginConfig"] = json.loads(sf.config)
    wasm["failStrategy"] = "FAIL_OPEN" if f.fail_open else "FAIL_CLOSE"
    spec: Obj = {"selector": {"matchLabels": dict(service.selector)}}
    if f.phase and f.phase != "UNSPECIFIED_PHASE":
        spec["phase"] = f.phase
    spec["priority"] = f.priority if f.priority is not None else len(service.filters) - index
    mode = _MATCH_MODE.get(service.context)
    if mode:
        spec["match"] = [{"mode": mode}]
    spec["wasm"] = wasm
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "TrafficExtension",
            "metadata": _filter_metadata(service, f), "spec": spec}


def kustomization(resources: list[str], *, namespace: str | None = None,
                  patches: list[Obj] | None = None) -> Obj:
    obj: Obj = {"apiVersion": KUSTOMIZE_API, "kind": "Kustomization"}
    if namespace is not None:
        obj["namespace"] = namespace
    obj["resources"] = resources
    if patches:
        obj["patches"] = patches
    return obj


def patch_entry(path: str, service: Service) -> Obj:
    return {"path": path, "target": {"group": "apps", "version": "v1", "kind": "Deployment",
                                     "name": service.deployment}}
