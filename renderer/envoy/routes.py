"""A gateway's route table, built from its rendered objects the way its control plane builds it, for
verify to run in a real Envoy: which HTTP filters the listener has, and which of them each virtual host
or route switches on or off.

- Envoy Gateway (internal/xds/translator/wasm.go): every Wasm extension of every policy is an HTTP
  filter of the listener, disabled there, named `envoy.filters.http.wasm/<policy ns/name>/wasm/<i>`; each
  HTTPRoute rule is a route of each of its hostnames' virtual hosts, and turns on (route.v3.FilterConfig)
  the extensions of the policy that attaches to it: its HTTPRoute's own, else its Gateway's, never both
  (mergeType unset: "only the most specific configuration takes effect").
- Istio, WasmPlugins: the gateway's chain as istiod builds a sidecar's (envoy/istio.py), one catch-all
  virtual host.
- Higress: its controller hands Istio one WasmPlugin per plugin whose configuration carries every
  matchRule under `_rules_`; the filter picks the rule for each request itself (Higress's SDKs do), so
  one filter, one catch-all virtual host, and what a route gets is what the filter makes of `_rules_`.
- Istio, EnvoyFilters: each HTTP_FILTER patch's filter names an EXTENSION_CONFIG patch's configuration,
  which istiod serves over ECDS and istio-agent rewrites from the image to a local file; a static Envoy
  gets that result inline. istiod names a gateway's virtual hosts <host>:<port>; here there is one per
  domain a VIRTUAL_HOST patch names and a catch-all `*`, and each MERGE patch merges its
  typed_per_filter_config into the virtual hosts it matches, as envoyfilter/rc_patch.go does.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import gateway_objects
from ..model import FilterSet, Gateway
from .envoy_filters import envoy_filter_order
from .istio import STRING_VALUE, WASM_TYPE, ChainError, service_chains

Obj = dict[str, Any]
ImageFetcher = Callable[[str], bytes]
EG_WASM = "envoy.filters.http.wasm"  # egv1a1.EnvoyFilterWasm: the prefix of its per-route filter names
EG_RUNTIME = "envoy.wasm.runtime.v8"


@dataclass(frozen=True)
class RouteTable:
    """The listener's HTTP filters (before the router) and its virtual hosts."""

    http_filters: tuple[Obj, ...]
    virtual_hosts: tuple[Obj, ...]
    host: str  # a host the table routes: the default :authority of a test that names none


def _module_file(data: bytes, module_dir: Path) -> str:
    path = module_dir / f"{hashlib.sha256(data).hexdigest()[:16]}-gateway.wasm"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def _pulled(reference: str, images: ImageFetcher, module_dir: Path, where: str) -> str:
    try:
        return _module_file(images(reference), module_dir)
    except Exception as e:  # noqa: BLE001 - whatever the registry client raised fails this gateway
        raise ChainError(f"{where}: the image {reference} could not be pulled: {e}") from None


def _gateway_objects(pairs: Iterable[tuple[str, Obj]], gateway: Gateway) -> list[tuple[str, Obj]]:
    prefix = f"overlays/{gateway.name}/"
    return [(path, obj) for path, obj in pairs if path.startswith(prefix) and obj.get("kind") != "Kustomization"]


def _route(name: str, match: Obj, cluster: str, per_filter: Obj | None = None) -> Obj:
    route: Obj = {"name": name, "match": match, "route": {"cluster": cluster, "timeout": "0s"}}
    if per_filter:
        route["typed_per_filter_config"] = per_filter
    return route


def route_table(fs: FilterSet, gateway: Gateway, pairs: Iterable[tuple[str, Obj]], module_dir: Path,
                cluster: str, images: ImageFetcher) -> RouteTable:
    """The route table of `gateway` from the rendered objects; ChainError when they give none Envoy runs."""
    found = _gateway_objects(pairs, gateway)
    if gateway.control_plane == "envoy-gateway":
        return _envoy_gateway(gateway, found, module_dir, cluster, images)
    if gateway.control_plane == "istio":
        if any(obj.get("kind") == "EnvoyFilter" for _, obj in found):
            return _istio_envoy_filters(gateway, found, module_dir, cluster, images)
        return _istio_wasm_plugins(gateway, found, module_dir, cluster, images, fs.istio)
    return _istio_wasm_plugins(gateway, _higress_as_istio(found), module_dir, cluster, images, None)


# ---------------------------------------------------------------------------------- Higress

# matchRules keys -> what the Higress controller names them in the plugin configuration.
_HIGRESS_MATCH = (("ingress", "_match_route_"), ("service", "_match_service_"), ("domain", "_match_domain_"))
_HIGRESS_KEPT = ("url", "sha256", "pluginName", "phase", "priority", "failStrategy")


def _higress_as_istio(found: list[tuple[str, Obj]]) -> list[tuple[str, Obj]]:
    """What the Higress controller makes of each WasmPlugin (pkg/ingress/config/ingress_config.go): an
    Istio WasmPlugin whose configuration is defaultConfig (unless disabled) plus `_rules_`, each rule its
    config with its match lists; none at all when the default is disabled and no rule is left."""
    converted = []
    for path, obj in found:
        spec = obj.get("spec") or {}
        disabled = bool(spec.get("defaultConfigDisable"))
        config: Obj = {} if disabled else dict(spec.get("defaultConfig") or {})
        rules = []
        for rule in spec.get("matchRules") or []:
            entry = dict(rule.get("config") or {})
            entry.update({name: list(rule[key]) for key, name in _HIGRESS_MATCH if rule.get(key)})
            rules.append(entry)
        if rules:
            config["_rules_"] = rules
        elif disabled:
            continue
        istio_spec: Obj = {key: spec[key] for key in _HIGRESS_KEPT if key in spec}
        if config:
            istio_spec["pluginConfig"] = config
        converted.append((path, {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                                 "metadata": obj.get("metadata") or {}, "spec": istio_spec}))
    return converted


# ---------------------------------------------------------------------------------- Envoy Gateway


def _eg_filter(policy: Obj, index: int, entry: Obj, module_dir: Path, images: ImageFetcher) -> Obj:
    meta = policy["metadata"]
    ir_name = f"envoyextensionpolicy/{meta['namespace']}/{meta['name']}/wasm/{index}"
    code = entry.get("code") or {}
    if code.get("type") != "Image":
        raise ChainError(f"EnvoyExtensionPolicy {meta['namespace']}/{meta['name']}: wasm[{index}] is not an image; "
                         "only images are pulled here")
    filename = _pulled(str(code["image"]["url"]), images, module_dir,
                       f"EnvoyExtensionPolicy {meta['namespace']}/{meta['name']} wasm[{index}]")
    config = entry.get("config")
    plugin: Obj = {"name": entry.get("name", ir_name),
                   "vm_config": {"vm_id": ir_name, "runtime": EG_RUNTIME, "code": {"local": {"filename": filename}}},
                   "configuration": {"@type": STRING_VALUE,
                                     "value": "" if config is None else json.dumps(config, separators=(",", ":"))},
                   "fail_open": bool(entry.get("failOpen", False))}
    if entry.get("rootID"):
        plugin["root_id"] = entry["rootID"]
    return {"name": f"{EG_WASM}/{ir_name}", "disabled": True, "typed_config": {"@type": WASM_TYPE, "config": plugin}}


def _eg_match(prefix: str) -> Obj:
    # A PathPrefix match: "/" is every path, any other prefix matches whole segments only.
    return {"prefix": "/"} if prefix == "/" else {"path_separated_prefix": prefix.rstrip("/")}


def _envoy_gateway(gateway: Gateway, found: list[tuple[str, Obj]], module_dir: Path, cluster: str,
                   images: ImageFetcher) -> RouteTable:
    on_gateway: Obj | None = None
    on_route: dict[str, Obj] = {}
    for _, obj in found:
        for ref in (obj.get("spec") or {}).get("targetRefs") or []:
            if ref.get("kind") == "Gateway" and ref.get("name") == gateway.target_gateway:
                on_gateway = obj
            elif ref.get("kind") == "HTTPRoute":
                on_route[str(ref.get("name"))] = obj
    filters: dict[str, Obj] = {}
    vhosts: dict[str, Obj] = {}
    ns, gname = gateway.namespace, gateway.target_gateway
    for route in gateway.http_routes:
        policy = on_route.get(route.name, on_gateway)
        names = []
        for index, entry in enumerate((policy or {}).get("spec", {}).get("wasm") or []):
            assert policy is not None
            built = _eg_filter(policy, index, entry, module_dir, images)
            filters.setdefault(built["name"], built)
            names.append(built["name"])
        per_filter = {name: {"@type": gateway_objects.FILTER_CONFIG, "config": {}} for name in names}
        for host in route.hostnames:
            label = host.replace(".", "_").replace("*", "wildcard")
            vhost = vhosts.setdefault(host, {"name": f"{ns}/{gname}/http/{label}", "domains": [host], "routes": []})
            vhost["routes"].append(_route(f"httproute/{ns}/{route.name}/rule/0/match/0/{label}",
                                          _eg_match(route.path_prefix), cluster, per_filter))
    first = gateway.http_routes[0].hostnames[0] if gateway.http_routes else "gateway.local"
    return RouteTable(tuple(filters.values()), tuple(vhosts.values()), first.replace("*", "any"))


# ---------------------------------------------------------------------------------- Istio


def _catch_all(gateway: Gateway, cluster: str) -> Obj:
    return {"name": f"*:{gateway.port}", "domains": ["*"], "routes": [_route("default", {"prefix": "/"}, cluster)]}


def _istio_wasm_plugins(gateway: Gateway, found: list[tuple[str, Obj]], module_dir: Path, cluster: str,
                        images: ImageFetcher, release: tuple[int, int] | None) -> RouteTable:
    """The chain istiod `release` builds from WasmPlugins (None, for Higress, whose Istio is its own and
    not the spec's: the newest translation)."""
    chains = service_chains(found, {gateway.name: "GATEWAY"}, module_dir, only={gateway.name}, istio=release,
                            images=images)
    filters = tuple(f.http_filter for c in chains for f in c.filters)
    return RouteTable(filters, (_catch_all(gateway, cluster),), "gateway.local")


def _ecds_filter(value: Obj, extensions: dict[str, Obj], module_dir: Path, images: ImageFetcher, where: str) -> Obj:
    """The HTTP filter Envoy ends up with: the named extension configuration, its image pulled."""
    name = str(value.get("name"))
    if "config_discovery" not in value:
        raise ChainError(f"{where}: HTTP filter {name!r} is not an extension configuration; only those are modelled "
                         "for gateways")
    if name not in extensions:
        raise ChainError(f"{where}: HTTP filter {name!r} names an extension configuration no EXTENSION_CONFIG patch "
                         "adds: istiod serves nothing for it and Envoy waits for it forever")
    typed = copy.deepcopy(extensions[name])
    vm = typed["config"]["vm_config"]
    remote = (vm.get("code") or {}).get("remote") or {}
    uri = str((remote.get("http_uri") or {}).get("uri", ""))
    if not uri.startswith("oci://"):
        raise ChainError(f"{where}: extension configuration {name!r} loads {uri!r}; only oci:// images are pulled here")
    vm["code"] = {"local": {"filename": _pulled(uri, images, module_dir, where)}}
    built: Obj = {"name": name, "typed_config": typed}
    if value.get("disabled"):
        built["disabled"] = True
    return built


def _patch_target(patch: Obj) -> tuple[Any, Any, Any]:
    rc = (patch.get("match") or {}).get("routeConfiguration") or {}
    vhost = rc.get("vhost") or {}
    return rc.get("portNumber"), vhost.get("name"), (vhost.get("route") or {}).get("name")


def _merge_per_filter(target: Obj, patch: Obj) -> None:
    merged = {**target.get("typed_per_filter_config", {}), **patch["patch"]["value"].get("typed_per_filter_config", {})}
    target["typed_per_filter_config"] = merged


def _istio_vhosts(gateway: Gateway, scope: list[Obj], cluster: str) -> list[Obj]:
    """The virtual hosts istiod would build for the hosts the patches and the gateway's routes name: each
    of the gateway's named routes on its hosts (a VirtualService prefix match), then a catch-all route."""
    hosts: list[str] = []
    for patch in scope:
        _, vhost, _ = _patch_target(patch)
        if vhost:
            hosts.append(str(vhost).rpartition(":")[0])
    hosts += [h for r in gateway.http_routes for h in r.hostnames]
    vhosts = []
    for host in dict.fromkeys(hosts):
        routes = [_route(r.name, {"prefix": r.path_prefix}, cluster) for r in gateway.http_routes if host in r.hostnames]
        vhosts.append({"name": f"{host}:{gateway.port}", "domains": [host],
                       "routes": [*routes, _route("default", {"prefix": "/"}, cluster)]})
    vhosts.append(_catch_all(gateway, cluster))
    return vhosts


def _istio_envoy_filters(gateway: Gateway, found: list[tuple[str, Obj]], module_dir: Path, cluster: str,
                         images: ImageFetcher) -> RouteTable:
    extensions: dict[str, Obj] = {}
    chain: list[tuple[Obj, str]] = []
    scope: list[Obj] = []  # VIRTUAL_HOST and HTTP_ROUTE merges, in patch order
    for path, obj in sorted(found, key=envoy_filter_order):
        for patch in (obj.get("spec") or {}).get("configPatches") or []:
            value = (patch.get("patch") or {}).get("value") or {}
            context = (patch.get("match") or {}).get("context", "ANY")
            if patch.get("applyTo") == "EXTENSION_CONFIG":
                extensions[str(value.get("name"))] = value.get("typed_config") or {}
            elif context not in ("ANY", "GATEWAY"):
                continue
            elif patch.get("applyTo") == "HTTP_FILTER":
                # Each goes in just before the router, so after the ones before it: list order.
                chain.append((value, path))
            elif patch.get("applyTo") in ("VIRTUAL_HOST", "HTTP_ROUTE") and patch["patch"].get("operation") == "MERGE":
                scope.append(patch)
    http_filters = tuple(_ecds_filter(value, extensions, module_dir, images, path) for value, path in chain)
    vhosts = _istio_vhosts(gateway, scope, cluster)
    for patch in scope:
        port, vhost_name, route_name = _patch_target(patch)
        for vhost in vhosts:
            if port not in (None, gateway.port) or vhost_name not in (None, vhost["name"]):
                continue
            if patch["applyTo"] == "VIRTUAL_HOST":
                _merge_per_filter(vhost, patch)
            else:
                for route in vhost["routes"]:
                    if route_name in (None, route["name"]):
                        _merge_per_filter(route, patch)
    return RouteTable(http_filters, tuple(vhosts), "gateway.local")
