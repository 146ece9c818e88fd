"""WasmPlugin and TrafficExtension objects -> the Wasm HTTP filters istiod gives a listener
(istio/istio, pilot/pkg: config/kube/extensions/translate.go, model/extensions.go buildWasmConfig,
networking/core/listener_builder.go buildHTTPConnectionManager).

The plugins of a listener class (match.mode SERVER for inbound, CLIENT for outbound and gateways; no
match: every class) in creation-time-then-name order, stably sorted by descending `priority` (unset =
lowest), placed by phase: AUTHN, then AUTHZ, then STATS, then unspecified, all before the EnvoyFilter
patches (which istiod applies to the finished listener). PluginConfig: name `<namespace>.<name>` (from
1.30, where a WasmPlugin becomes a TrafficExtension, `<namespace>.<name>~istio-translated-
wasmplugin`), HCM filter name `extenstions.istio.io/wasmplugin/<name>` (sic, up to 1.25),
`extensions.istio.io/wasmplugin/<name>` (1.26-1.29) or `extensions.istio.io/trafficextension/<name>`
(1.30+), root_id from `pluginName`, `pluginConfig` as JSON in a google.protobuf.StringValue, runtime
V8, `file://` stripped to a local filename, `failStrategy` as `failure_policy` for 1.25+ and as the
deprecated `fail_open` before. In a mesh the plugin reaches Envoy over ECDS; in the static bootstrap
here its config sits inline in the chain.
"""

from __future__ import annotations

import json

from ..model import Context
from .chain import STRING_VALUE, ChainError, Obj
from .mounts import Overlay

_PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")
_INT32_MIN = -(2**31)
# A WasmPlugin has no runtime field: istiod asks every Envoy for V8, whatever a filter's own runtime
# (so this is istiod's constant, not the spec's default, model.DEFAULTS.runtime, though the names agree).
ISTIOD_RUNTIME = "envoy.wasm.runtime.v8"
# The listener class -> the WasmPlugin match mode that selects it (model/extensions.go).
_MODE = {"SIDECAR_INBOUND": "SERVER", "SIDECAR_OUTBOUND": "CLIENT", "GATEWAY": "CLIENT"}


def wasm_plugin_filter(obj: Obj, istio: tuple[int, int] | None) -> tuple[str, Obj]:
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
    plugin["vm_config"] = {"runtime": ISTIOD_RUNTIME,
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


def wasm_plugins_in_order(ov: Overlay, context: Context) -> list[tuple[str, Obj]]:
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
