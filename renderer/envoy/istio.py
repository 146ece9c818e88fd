"""The HTTP filter chain istiod would give each service's sidecar, built from the rendered objects.

Everything here reads the rendered tree (the plan's (file, object) pairs), never the spec: a wrong
mount path, a stale ConfigMap name or a wrong order in the tree shows up as a wrong or failing chain.
Envoy configuration is built as data (dicts) and written as JSON by renderer.envoy.process.

Modelled, from istiod's source (istio/istio, pilot/pkg):
- EnvoyFilter order: `priority`, then creation time, then name (model/push_context.go
  sortEnvoyFilters, sortConfigByCreationTime). A tree applied in one sync creates its objects within
  the same second (CreationTimestamp has a resolution of a second), so creation time is taken as
  equal and equal priorities fall back to the name.
- HTTP_FILTER patches of the service's context (or ANY), as patchHTTPFilters applies them
  (networking/core/envoyfilter/listener_patch.go): INSERT_BEFORE / INSERT_AFTER the matched
  sub-filter (without a sub-filter: first / last), INSERT_FIRST, ADD (appended: after the router,
  which Envoy refuses, so it is an error here). A patch whose sub-filter matches nothing is skipped
  by istiod; here it is an error, since the filter would silently be missing. Matched names as the
  target release knows them: only the deprecated ones up to 1.6, both through 1.18 (an alias table),
  only the canonical ones from 1.19.
- WasmPlugin -> TrafficExtension -> Envoy (config/kube/extensions/translate.go, model/extensions.go
  buildWasmConfig, networking/core/listener_builder.go buildHTTPConnectionManager): the plugins of a
  listener class (match.mode SERVER for inbound, CLIENT for outbound and gateways; no match: every
  class) in creation-time-then-name order, stably sorted by descending `priority` (unset = lowest),
  placed by phase: AUTHN, then AUTHZ, then STATS, then unspecified, all before the EnvoyFilter
  patches (which istiod applies to the finished listener). PluginConfig: name `<namespace>.<name>`
  (from 1.30, where a WasmPlugin becomes a TrafficExtension, `<namespace>.<name>~istio-translated-
  wasmplugin`), HCM filter name `extenstions.istio.io/wasmplugin/<name>` (sic, up to 1.25),
  `extensions.istio.io/wasmplugin/<name>` (1.26-1.29) or `extensions.istio.io/trafficextension/
  <name>` (1.30+), root_id from `pluginName`, `pluginConfig` as JSON in a google.protobuf.StringValue,
  runtime V8, `file://` stripped to a local filename, `failStrategy` as `failure_policy` for 1.25+
  and as the deprecated `fail_open` before. In a mesh the plugin reaches Envoy over ECDS; in the
  static bootstrap here its config sits inline in the chain.
- The shape current Envoy cannot load is translated: the Istio 1.5/1.6 `config:` Struct (JSON
  names, a plain string configuration; Envoy 1.40 refuses the field) becomes a typed Wasm config with
  a StringValue configuration. The Istio 1.7 udpa TypedStruct stays as it is: Envoy 1.40 loads it.
- The module: the filename in the Wasm config must be a file the Deployment patch's
  `sidecar.istio.io/userVolume` / `userVolumeMount` annotations mount (a projected or plain
  configMap volume: ConfigMap name, item key -> path, mount path), the ConfigMap must be in the tree
  in the workload's namespace with that key in `binaryData`; its bytes are written to a local file and
  the filename rewritten to it.
- Listeners (networking/core/listener_inbound.go, listener.go, gateway.go, util/proxy_headers.go,
  route/route.go): HCM codec AUTO, `server_name` istio-envoy on inbound and gateway listeners (outbound
  keeps Envoy's "envoy"), server header OVERWRITE, XFCC APPEND_FORWARD inbound and SANITIZE_SET on
  gateways, `use_remote_address` false on sidecars and true on gateways, path normalisation, escaped
  slashes kept, websocket upgrades, the UUID request-id extension, and a catch-all route without a
  timeout (inbound) to one cluster.

Not modelled: mTLS and the TLS/ALPN listener filters, metadata exchange, stats and telemetry filters,
authn/authz (PeerAuthentication, AuthorizationPolicy, ext-authz), fault/cors/grpc-stats placeholders
(they do nothing without per-route config), retries, tracing, ECDS delivery itself, the original-dst
virtual listeners, port-level `match.ports`, workload selectors (an overlay's objects are taken to
select its workload), EnvoyFilter patches other than HTTP_FILTER, and the proxy's node metadata.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import objects
from ..model import Context, Filter, FilterSet, OutputKind, Service, ServiceFilter

Obj = dict[str, Any]

WASM_TYPE = objects.WASM_TYPE
STRING_VALUE = objects.STRING_VALUE
TYPED_STRUCTS = ("type.googleapis.com/udpa.type.v1.TypedStruct", "type.googleapis.com/xds.type.v3.TypedStruct")
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UUID_TYPE = "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
USER_VOLUME = "sidecar.istio.io/userVolume"
USER_VOLUME_MOUNT = "sidecar.istio.io/userVolumeMount"
COMPONENT_LOG_LEVEL = "sidecar.istio.io/componentLogLevel"

# The deprecated names Istio <= 1.6 generated and 1.7-1.18 still matched through an alias table.
_ALIASES = {objects.LEGACY_HCM: objects.HCM, objects.LEGACY_ROUTER: objects.ROUTER}
_PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")
_INT32_MIN = -(2**31)
# The listener class -> the WasmPlugin match mode that selects it (model/extensions.go).
_MODE = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT", "GATEWAY": "CLIENT"}
# Proto JSON names of the Istio 1.5/1.6 Struct shape -> proto field names (Envoy reads both, but one
# spelling keeps the rewrite of the filename in one place).
_LEGACY_KEYS = {"rootId": "root_id", "vmConfig": "vm_config", "vmId": "vm_id",
                "allowPrecompiled": "allow_precompiled", "failOpen": "fail_open",
                "nackOnCacheMiss": "nack_on_cache_miss", "environmentVariables": "environment_variables"}


class ChainError(Exception):
    """The rendered tree does not give a service a loadable chain: a message naming what and where."""


@dataclass(frozen=True)
class ChainFilter:
    """One Wasm HTTP filter of a chain, as Envoy loads it."""

    source: str  # the rendered file the object came from
    kind: str  # EnvoyFilter | WasmPlugin
    object_name: str  # <namespace>/<name> of the object
    http_filter: Obj  # {name, typed_config}: the module at a local file
    module_path: str  # the filename the rendered object names (in the pod)
    translated: str = ""  # what was changed for current Envoy, "" when nothing

    @property
    def plugin(self) -> Obj:
        typed = self.http_filter["typed_config"]
        plugin: Obj = typed["value"]["config"] if typed.get("@type") in TYPED_STRUCTS else typed["config"]
        return plugin


@dataclass(frozen=True)
class ServiceChain:
    service: str
    namespace: str
    context: Context
    filters: tuple[ChainFilter, ...]
    component_log_level: tuple[tuple[str, str], ...] = ()  # from sidecar.istio.io/componentLogLevel


# ---------------------------------------------------------------------------------- the tree


@dataclass
class _Overlay:
    name: str
    namespace: str = "default"
    envoy_filters: list[tuple[str, Obj]] = field(default_factory=list)
    wasm_plugins: list[tuple[str, Obj]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


def _overlays(pairs: Iterable[tuple[str, Obj]]) -> tuple[dict[str, _Overlay], dict[tuple[str, str], Obj]]:
    overlays: dict[str, _Overlay] = {}
    configmaps: dict[tuple[str, str], Obj] = {}
    for path, obj in pairs:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind == "ConfigMap":
            configmaps[(str(meta.get("namespace", "default")), str(meta.get("name")))] = obj
            continue
        parts = path.split("/")
        if len(parts) != 3 or parts[0] != "overlays":
            continue
        ov = overlays.setdefault(parts[1], _Overlay(parts[1]))
        if kind == "Kustomization" and obj.get("namespace"):
            ov.namespace = str(obj["namespace"])
        elif kind == "EnvoyFilter":
            ov.envoy_filters.append((path, obj))
        elif kind in ("WasmPlugin", "TrafficExtension"):  # one translation: istiod turns the first into the second
            ov.wasm_plugins.append((path, obj))
        elif kind == "Deployment":
            tmpl = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
            ov.annotations.update({str(k): str(v) for k, v in (tmpl.get("annotations") or {}).items()})
    return overlays, configmaps


class _Modules:
    """Module bytes written once per content into a directory; the chains point at those files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: dict[str, Path] = {}

    def file_for(self, data: bytes, name: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._written.get(digest)
        if path is None:
            path = self.directory / f"{digest[:16]}-{posixpath.basename(name) or 'module.wasm'}"
            path.write_bytes(data)
            self._written[digest] = path
        return str(path)


# How a chain gets the module of an image (REPOSITORY@sha256:DIGEST or oci://...): pulled from its
# registry by the caller, as the kubelet (image volume) or istio-agent (oci:// URL) would pull it.
ImageFetcher = Callable[[str], bytes]
IMAGE_MODULE = "plugin.wasm"  # where Istio's compat image layout keeps the module (pkg/wasm/imagefetcher.go)


def _image_module(reference: str, images: ImageFetcher | None) -> bytes | str:
    if images is None:
        return f"the image {reference} is not pulled here (no registry access was given)"
    try:
        return images(reference)
    except Exception as e:  # noqa: BLE001 - whatever the registry client raised is this chain's failure
        return f"the image {reference} could not be pulled: {e}"


def _mounted_files(ov: _Overlay, configmaps: Mapping[tuple[str, str], Obj],
                   images: ImageFetcher | None = None) -> dict[str, bytes | str]:
    """Path in the sidecar -> the module bytes, or why that path cannot be read (an error message)."""
    volumes = _json_map(ov, USER_VOLUME)
    mounts = _json_map(ov, USER_VOLUME_MOUNT)
    files: dict[str, bytes | str] = {}
    for volume_name, mount in sorted(mounts.items()):
        if not isinstance(mount, dict) or not isinstance(mount.get("mountPath"), str):
            raise ChainError(f"overlays/{ov.name}: {USER_VOLUME_MOUNT} entry {volume_name!r} has no mountPath")
        if volume_name not in volumes:
            raise ChainError(f"overlays/{ov.name}: {USER_VOLUME_MOUNT} mounts volume {volume_name!r}, which "
                             f"{USER_VOLUME} does not define: the pod would not be created")
        source = volumes[volume_name] or {}
        image = source.get("image") if isinstance(source, dict) else None
        if isinstance(image, dict) and isinstance(image.get("reference"), str):
            # An image volume: the image's files under the mount path, the module at plugin.wasm.
            target = posixpath.normpath(posixpath.join(mount["mountPath"], IMAGE_MODULE))
            files[target] = _image_module(image["reference"], images)
            continue
        sources = [source] if "configMap" in source else list((source.get("projected") or {}).get("sources") or [])
        for src in sources:
            cm = src.get("configMap") if isinstance(src, dict) else None
            if not cm:
                continue
            name = str(cm.get("name"))
            obj = configmaps.get((ov.namespace, name))
            if obj is None:
                if cm.get("optional"):
                    continue
                have = sorted(n for ns, n in configmaps if ns == ov.namespace)
                raise ChainError(f"overlays/{ov.name}: {USER_VOLUME} mounts ConfigMap {name!r}, which the "
                                 f"tree does not have in namespace {ov.namespace!r} (it has: "
                                 f"{', '.join(have) or 'none'}): the pod would not start")
            binary = obj.get("binaryData") or {}
            items = cm.get("items") or [{"key": k, "path": k} for k in sorted(binary)]
            for item in items:
                key, rel = str(item.get("key")), str(item.get("path"))
                target = posixpath.normpath(posixpath.join(mount["mountPath"], rel))
                if key not in binary:
                    files[target] = (f"ConfigMap {ov.namespace}/{name} has no binaryData key {key!r} "
                                     f"(keys: {', '.join(sorted(binary)) or 'none'})")
                    continue
                try:
                    files[target] = base64.b64decode(binary[key], validate=True)
                except (binascii.Error, ValueError):
                    files[target] = f"ConfigMap {ov.namespace}/{name} key {key!r} is not base64"
    return files


def _json_map(ov: _Overlay, annotation: str) -> dict[str, Any]:
    text = ov.annotations.get(annotation)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ChainError(f"overlays/{ov.name}: annotation {annotation} is not JSON ({e})") from None
    if isinstance(value, list):  # the list form: [{"name": ..., <volume source>}]
        return {str(v.get("name")): {k: x for k, x in v.items() if k != "name"} for v in value if isinstance(v, dict)}
    if not isinstance(value, dict):
        raise ChainError(f"overlays/{ov.name}: annotation {annotation} is neither a JSON map nor a list")
    return value


# ---------------------------------------------------------------------------------- translation


def _wasm_plugin_config(value: Obj) -> tuple[Obj, str]:
    """An EnvoyFilter patch value -> (PluginConfig with proto field names, what was translated)."""
    typed = value.get("typed_config")
    if typed is None and "config" in value:
        legacy = value.get("config") or {}
        plugin = _snake(legacy.get("config") or {})
        if isinstance(plugin.get("configuration"), str):
            plugin["configuration"] = {"@type": STRING_VALUE, "value": plugin["configuration"]}
        return plugin, "the Istio 1.5/1.6 `config:` Struct as a typed Wasm config (StringValue configuration)"
    if not isinstance(typed, dict):
        raise ChainError("the patch value has neither typed_config nor config")
    if typed.get("@type") in TYPED_STRUCTS:
        if typed.get("type_url") != WASM_TYPE:
            raise ChainError(f"TypedStruct of {typed.get('type_url')!r}, not the Wasm filter")
        return json.loads(json.dumps((typed.get("value") or {}).get("config") or {})), ""
    if typed.get("@type") != WASM_TYPE:
        raise ChainError(f"an HTTP filter of type {typed.get('@type')!r}, not the Wasm filter")
    return json.loads(json.dumps(typed.get("config") or {})), ""


def _snake(plugin: Obj) -> Obj:
    out: Obj = {}
    for key, value in plugin.items():
        if isinstance(value, dict) and key in ("vmConfig", "vm_config", "code", "local"):
            value = _snake(value)
        out[_LEGACY_KEYS.get(key, key)] = value
    return out


def _wasm_plugin_filter(obj: Obj, istio: tuple[int, int] | None) -> tuple[str, Obj]:
    """A WasmPlugin -> (the HCM filter name istiod gives it, its PluginConfig), as buildWasmConfig
    does in the target release (the newest shape when it is not known)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    namespace, name = str(meta.get("namespace", "default")), str(meta.get("name"))
    kind = str(obj.get("kind"))
    if kind == "TrafficExtension":  # the Wasm fields sit under spec.wasm (extensions.istio.io TrafficExtension)
        spec = {**spec, **(spec.get("wasm") or {})}
    url = str(spec.get("url", ""))
    if not url.startswith(("file://", "oci://")):
        raise ChainError(f"{kind} {namespace}/{name} loads {url!r}: only file:// modules (mounted from the "
                         "rendered tree) and oci:// images can be run here")
    version = istio or (99, 0)
    if kind == "TrafficExtension":  # model/extensions.go: TrafficExtensionResourceNamePrefix + ns.name
        resource = f"{namespace}.{name}"
        filter_name = f"extensions.istio.io/trafficextension/{resource}"
    elif version >= (1, 30):  # translated into a TrafficExtension (config/kube/extensions/translate.go)
        resource = f"{namespace}.{name}~istio-translated-wasmplugin"
        filter_name = f"extensions.istio.io/trafficextension/{resource}"
    else:  # the prefix was misspelt until 1.26
        resource = f"{namespace}.{name}"
        filter_name = f"{'extensions' if version >= (1, 26) else 'extenstions'}.istio.io/wasmplugin/{resource}"
    plugin: Obj = {"name": resource, "root_id": str(spec.get("pluginName", ""))}
    if spec.get("pluginConfig"):
        plugin["configuration"] = {"@type": STRING_VALUE,
                                   "value": json.dumps(spec["pluginConfig"], separators=(",", ":"))}
    plugin["vm_config"] = {"runtime": "envoy.wasm.runtime.v8",
                           # file://: the mounted file; oci://: the image, which istio-agent pulls
                           # and replaces with a local file before Envoy sees the config.
                           "code": {"local": {"filename": url.removeprefix("file://")}},
                           # istiod's resource version of the object; a static tree has none.
                           "environment_variables": {"key_values": {"ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": ""}}}
    strategy = spec.get("failStrategy")
    if version >= (1, 25):  # failure_policy for 1.25+ proxies, the deprecated fail_open before
        policy = {"FAIL_OPEN": "FAIL_OPEN", "FAIL_CLOSE": "FAIL_CLOSED", "FAIL_RELOAD": "FAIL_RELOAD"}.get(str(strategy))
        if policy is not None and (policy != "FAIL_RELOAD" or version >= (1, 30)):
            plugin["failure_policy"] = policy
    elif strategy == "FAIL_OPEN":
        plugin["fail_open"] = True
    return filter_name, plugin


def _localise(plugin: Obj, files: Mapping[str, bytes | str], modules: _Modules, where: str) -> tuple[Obj, str]:
    """Point the plugin's module at a local copy of the mounted file; fail when nothing is mounted there."""
    vm = plugin.get("vm_config") or {}
    local = (vm.get("code") or {}).get("local") or {}
    filename = local.get("filename")
    if not isinstance(filename, str):
        raise ChainError(f"{where}: the Wasm config loads no local file (vm_config.code.local.filename)")
    found = files.get(posixpath.normpath(filename))
    if found is None:
        mounted = ", ".join(sorted(files)) or "nothing"
        raise ChainError(f"{where}: loads {filename}, which the pod's {USER_VOLUME_MOUNT} does not mount "
                         f"(mounted: {mounted})")
    if isinstance(found, str):
        raise ChainError(f"{where}: loads {filename}: {found}")
    local["filename"] = modules.file_for(found, filename)
    return plugin, filename


# ---------------------------------------------------------------------------------- chains


def _matches_context(patch: Obj, context: Context) -> bool:
    wanted = (patch.get("match") or {}).get("context", "ANY")
    return wanted in ("ANY", context)


def _canonical(name: Any) -> str:
    return _ALIASES.get(str(name), str(name))


def _known_as(name: Any, istio: tuple[int, int] | None) -> str | None:
    """The filter a patch's match name finds in the target release's listeners, None when it finds
    none there: Istio <= 1.6 generated only the deprecated names, 1.7-1.18 matched both through an
    alias table, 1.19 dropped the alias (renderer.istio_versions: filter_names.*). An unknown
    release matches both."""
    name, version = str(name), istio or (1, 18)
    if name in _ALIASES:
        return _ALIASES[name] if version <= (1, 18) else None
    if name in _ALIASES.values() and version <= (1, 6):
        return None
    return name


def _release(istio: tuple[int, int] | None) -> str:
    return f"Istio {istio[0]}.{istio[1]}" if istio else "this Istio"


def _envoy_filter_order(item: tuple[str, Obj]) -> tuple[int, str]:
    _, obj = item
    meta = obj.get("metadata") or {}
    # Equal creation times (one sync) fall back to "<name>.<namespace>", as istiod compares them.
    return int((obj.get("spec") or {}).get("priority", 0)), f"{meta.get('name')}.{meta.get('namespace')}"


def _wasm_plugins_in_order(ov: _Overlay, context: Context) -> list[tuple[str, Obj]]:
    by_phase: dict[str, list[tuple[str, Obj]]] = {p: [] for p in _PHASES}
    created = sorted(ov.wasm_plugins, key=lambda item: (str(item[1]["metadata"].get("name")),
                                                        str(item[1]["metadata"].get("namespace"))))
    for path, obj in created:
        spec = obj.get("spec") or {}
        if spec.get("type", "HTTP") not in ("HTTP", "UNSPECIFIED_PLUGIN_TYPE"):
            continue
        modes = [str(m.get("mode", "UNDEFINED")) for m in spec.get("match") or []]
        if modes and not any(m in ("UNDEFINED", "CLIENT_AND_SERVER", _MODE[context]) for m in modes):
            continue
        by_phase[str(spec.get("phase") or "UNSPECIFIED_PHASE")].append((path, obj))
    ordered: list[tuple[str, Obj]] = []
    for phase in _PHASES:
        # sort is stable: equal priorities keep the creation (name) order, as sort.SliceStable does.
        ordered += sorted(by_phase[phase], key=lambda item: -int((item[1].get("spec") or {}).get("priority", _INT32_MIN)))
    return ordered


def _chain(ov: _Overlay, context: Context, configmaps: Mapping[tuple[str, str], Obj],
           modules: _Modules, istio: tuple[int, int] | None, images: ImageFetcher | None = None) -> ServiceChain:
    files = _mounted_files(ov, configmaps, images) if (ov.envoy_filters or ov.wasm_plugins) else {}
    levels = tuple((a, b) for a, _, b in (part.partition(":") for part in
                                           ov.annotations.get(COMPONENT_LOG_LEVEL, "").split(",")) if b)
    return ServiceChain(ov.name, ov.namespace, context, _build(ov, context, files, modules, istio, images), levels)


def _build(ov: _Overlay, context: Context, files: Mapping[str, bytes | str], modules: _Modules,
           istio: tuple[int, int] | None, images: ImageFetcher | None = None) -> tuple[ChainFilter, ...]:
    chain: list[ChainFilter | str] = []  # str: a filter istiod places that is not Wasm (the router)
    for path, obj in _wasm_plugins_in_order(ov, context):
        meta = obj["metadata"]
        where = f"{path} ({obj['kind']} {meta.get('namespace')}/{meta.get('name')})"
        try:
            name, plugin = _wasm_plugin_filter(obj, istio)
        except ChainError as e:
            raise ChainError(f"{where}: {e}") from None
        filename = plugin["vm_config"]["code"]["local"]["filename"]
        if filename.startswith("oci://"):  # istio-agent pulls it and hands Envoy a local file
            files = {**files, posixpath.normpath(filename): _image_module(filename, images)}
        plugin, module_path = _localise(plugin, files, modules, where)
        chain.append(ChainFilter(path, str(obj["kind"]), f"{meta.get('namespace')}/{meta.get('name')}",
                                 {"name": name, "typed_config": {"@type": WASM_TYPE, "config": plugin}}, module_path))
    chain.append(objects.ROUTER)
    for path, obj in sorted(ov.envoy_filters, key=_envoy_filter_order):
        meta = obj["metadata"]
        where = f"{path} (EnvoyFilter {meta.get('namespace')}/{meta.get('name')})"
        for patch in (obj.get("spec") or {}).get("configPatches") or []:
            if patch.get("applyTo") == "HTTP_FILTER" and _matches_context(patch, context):
                _apply(chain, patch, path, obj, where, files, modules, istio)
    _router_last(chain, context)
    return tuple(f for f in chain if isinstance(f, ChainFilter))


def _apply(chain: list[ChainFilter | str], patch: Obj, path: str, obj: Obj, where: str,
           files: Mapping[str, bytes | str], modules: _Modules, istio: tuple[int, int] | None) -> None:
    listener = (patch.get("match") or {}).get("listener") or {}
    network = ((listener.get("filterChain") or {}).get("filter")) or {}
    if network.get("name") is not None and _known_as(network["name"], istio) != objects.HCM:
        raise ChainError(f"{where}: the patch matches network filter {network['name']!r}, which is not the HTTP "
                         f"connection manager's name in {_release(istio)}'s listeners: istiod adds no HTTP filter")
    sub = (network.get("subFilter") or {}).get("name")
    value = (patch.get("patch") or {}).get("value") or {}
    operation = (patch.get("patch") or {}).get("operation")
    try:
        plugin, translated = _wasm_plugin_config(value)
    except ChainError as e:
        raise ChainError(f"{where}: {e}") from None
    plugin, module_path = _localise(plugin, files, modules, where)
    meta = obj["metadata"]
    typed_config: Obj = {"@type": WASM_TYPE, "config": plugin}
    original = value.get("typed_config") or {}
    if original.get("@type") in TYPED_STRUCTS:  # Envoy reads it as is: only the module path changes
        typed_config = {**original, "value": {**(original.get("value") or {}), "config": plugin}}
    item = ChainFilter(path, "EnvoyFilter", f"{meta.get('namespace')}/{meta.get('name')}",
                       {"name": str(value.get("name", objects.WASM_FILTER)), "typed_config": typed_config},
                       module_path, translated)
    names = [_canonical(f.http_filter["name"]) if isinstance(f, ChainFilter) else f for f in chain]
    if operation == "INSERT_FIRST" or (operation == "INSERT_BEFORE" and sub is None):
        chain.insert(0, item)
    elif operation == "ADD" or (operation == "INSERT_AFTER" and sub is None):
        chain.append(item)
    elif operation in ("INSERT_BEFORE", "INSERT_AFTER"):
        known = _known_as(sub, istio)
        if known is None or known not in names:
            raise ChainError(f"{where}: {operation} {sub!r}, which is not in the "
                             f"{(patch.get('match') or {}).get('context', 'ANY')} chain of {_release(istio)} "
                             f"({', '.join(names)}): istiod skips the patch and the filter is missing")
        at = names.index(known)
        chain.insert(at if operation == "INSERT_BEFORE" else at + 1, item)
    else:
        raise ChainError(f"{where}: patch operation {operation!r} on an HTTP filter is not modelled")


def _router_last(chain: Sequence[ChainFilter | str], context: Context) -> None:
    after = [f for f in chain[chain.index(objects.ROUTER) + 1:] if isinstance(f, ChainFilter)]
    if after:
        raise ChainError(f"{after[0].source} ({after[0].kind} {after[0].object_name}): the patch puts the filter "
                         f"after the router of the {context} chain, and Envoy refuses a filter after its terminal "
                         "router; insert it before envoy.filters.http.router")


def service_chains(pairs: Iterable[tuple[str, Obj]], contexts: Mapping[str, Context], module_dir: Path, *,
                   only: Collection[str] | None = None,
                   on_error: Callable[[str, ChainError], None] | None = None,
                   istio: tuple[int, int] | None = None, images: ImageFetcher | None = None) -> list[ServiceChain]:
    """The chain of each overlay's sidecar (or of those named in `only`), for the listener class its
    service declares (contexts: overlay name -> context; SIDECAR_INBOUND when absent). Modules are
    written to module_dir; `istio` (major, minor) picks the release's WasmPlugin translation. A tree that gives a service no loadable chain raises ChainError naming
    the file, or, with on_error, is reported there and the service left out."""
    overlays, configmaps = _overlays(pairs)
    modules = _Modules(module_dir)
    chains = []
    for name, ov in sorted(overlays.items()):
        if only is not None and name not in only:
            continue
        try:
            chains.append(_chain(ov, contexts.get(name, "SIDECAR_INBOUND"), configmaps, modules, istio, images))
        except ChainError as e:
            if on_error is None:
                raise
            on_error(name, e)
    return chains


def filter_set_chains(fs: FilterSet, pairs: Iterable[tuple[str, Obj]], module_dir: Path, *,
                      only: Collection[str] | None = None,
                      on_error: Callable[[str, ChainError], None] | None = None,
                      images: ImageFetcher | None = None) -> list[ServiceChain]:
    return service_chains(pairs, {s.name: s.context for s in fs.services}, module_dir, only=only,
                          on_error=on_error, istio=fs.istio, images=images)


def http_filter(fs: FilterSet, f: Filter, config: str | None, module_dir: Path, *,
                output: OutputKind = "EnvoyFilter", context: Context = "SIDECAR_INBOUND") -> Obj:
    """The Envoy HTTP filter (name, typed_config) that the object rendered for filter f with plugin
    configuration `config` gives, its module written under module_dir. The same translation as the
    chains: one answer to "what does Envoy load for this filter"."""
    if f.binary.is_oci:
        raise ChainError(f"filter {f.name!r} is an OCI image ({f.binary.oci}): its module is not in the tree")
    service = Service(name="validate", namespace="default", deployment="validate", selector=(("app", "validate"),),
                      resources=(), context=context, filters=(ServiceFilter(f, config),), proxy_log_level=(),
                      output=output)
    sf = service.filters[0]
    build = {"WasmPlugin": objects.wasm_plugin, "TrafficExtension": objects.traffic_extension}.get(output,
                                                                                                 objects.envoy_filter)
    obj = build(fs, service, 0, sf)
    files: dict[str, bytes | str] = {f.mounted_path: f.binary.data}
    ov = _Overlay("validate")
    key = f"overlays/validate/{f.name}.{output.lower()}.yaml"
    ov.envoy_filters, ov.wasm_plugins = ([(key, obj)], []) if output == "EnvoyFilter" else ([], [(key, obj)])
    # The mount is the rendered patch's by construction (objects.user_volume_mount): the module sits
    # at the filter's mounted path.
    # An image-delivered filter: the spec stage checked that the locked image holds exactly this file's
    # module, so it stands in for the pull.
    chain = _build(ov, context, files, _Modules(module_dir), fs.istio, images=lambda reference: f.binary.data)
    if len(chain) != 1:
        raise ChainError(f"filter {f.name!r}: the rendered object gives {len(chain)} filters in the {context} chain")
    return chain[0].http_filter


# ---------------------------------------------------------------------------------- listeners


def _hcm(context: Context, stat_prefix: str, route: Obj, http_filters: Sequence[Obj], *,
         stream_idle_timeout: str) -> Obj:
    hcm: Obj = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        # istiod sets 0s (no idle timeout); callers that must detect a stalled stream pass their own.
        "stream_idle_timeout": stream_idle_timeout,
        "request_id_extension": {"typed_config": {"@type": UUID_TYPE}},
        "route_config": route,
        "http_filters": [*http_filters, {"name": objects.ROUTER, "typed_config": {"@type": ROUTER_TYPE}}],
    }
    if context == "SIDECAR_INBOUND":
        hcm.update({"server_name": "istio-envoy", "server_header_transformation": "OVERWRITE",
                    "use_remote_address": False, "forward_client_cert_details": "APPEND_FORWARD",
                    "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True}})
    elif context == "SIDECAR_OUTBOUND":
        hcm.update({"server_header_transformation": "OVERWRITE", "use_remote_address": False})
    else:
        hcm.update({"server_name": "istio-envoy", "server_header_transformation": "OVERWRITE",
                    "use_remote_address": True, "xff_num_trusted_hops": 0,
                    "forward_client_cert_details": "SANITIZE_SET",
                    "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True}})
    return hcm


ACCESS_LOG_FIELDS = {
    "peer": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%",  # the socket, never an x-forwarded-for
    "code": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "upstream": "%UPSTREAM_HOST%",
}


def access_log(path: str, listener: str = "") -> Obj:
    """A JSON line per stream: its client port (which case), status, response flags and details."""
    fields = {**ACCESS_LOG_FIELDS, "listener": listener}
    return {"name": "envoy.access_loggers.file",
            "typed_config": {"@type": FILE_LOG_TYPE, "path": path, "log_format": {"json_format": fields}}}


def listener(name: str, context: Context, http_filters: Sequence[Obj], cluster: str, *,
             service_host: str = "service.default.svc.cluster.local", port: int = 8080,
             stream_idle_timeout: str = "0s", access_log_path: str | None = None,
             virtual_hosts: Sequence[Obj] = ()) -> Obj:
    """One listener on 127.0.0.1 (port 0: Envoy picks) shaped like istiod's for that context, whose
    chain is http_filters then the router, routing everything to `cluster` (or by `virtual_hosts`, a
    gateway's route table, when given)."""
    vhost: Obj
    if context == "SIDECAR_INBOUND":
        vhost = {"name": f"inbound|http|{port}", "domains": ["*"],
                 "routes": [{"name": "default", "match": {"prefix": "/"},
                             "decorator": {"operation": f"{service_host}:{port}/*"},
                             "route": {"cluster": cluster, "timeout": "0s",
                                       "max_stream_duration": {"max_stream_duration": "0s",
                                                               "grpc_timeout_header_max": "0s"}}}]}
        prefix = f"inbound_0.0.0.0_{port}"
    else:
        vhost = {"name": f"{service_host}:{port}", "domains": ["*"], "include_request_attempt_count": True,
                 "routes": [{"name": "default", "match": {"prefix": "/"},
                             "decorator": {"operation": f"{service_host}:{port}/*"},
                             "route": {"cluster": cluster, "timeout": "0s"}}]}
        prefix = f"outbound_0.0.0.0_{port}" if context == "SIDECAR_OUTBOUND" else f"outbound_{port}_gateway"
    route = {"name": name, "virtual_hosts": list(virtual_hosts) or [vhost], "validate_clusters": False}
    hcm = _hcm(context, prefix, route, http_filters, stream_idle_timeout=stream_idle_timeout)
    if access_log_path is not None:
        hcm["access_log"] = [access_log(access_log_path, name)]
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": objects.HCM, "typed_config": hcm}]}]}


def cluster(name: str, port: int) -> Obj:
    """A plain HTTP/1.1 upstream on 127.0.0.1."""
    return {"name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def bootstrap(listeners: Sequence[Obj], clusters: Sequence[Obj], *, node_id: str = "sidecar~127.0.0.1~wasm-gitops~default",
              node_cluster: str = "wasm-gitops") -> Obj:
    """A static bootstrap: the listeners, the clusters they route to, an admin on 127.0.0.1 (port 0)."""
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": list(listeners), "clusters": list(clusters)},
    }


def chain_bootstrap(chains: Sequence[ServiceChain], upstream_port: int = 9, **kwargs: Any) -> Obj:
    """N chains -> N listeners (named after their service) routing to one upstream cluster."""
    name = "upstream"
    return bootstrap([listener(c.service, c.context, [f.http_filter for f in c.filters], name,
                               service_host=f"{c.service}.{c.namespace}.svc.cluster.local", **kwargs)
                      for c in chains], [cluster(name, upstream_port)])
