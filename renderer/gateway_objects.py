"""The objects a gateway's control plane reads, built as plain data: an Istio ingress gateway's
WasmPlugins, TrafficExtensions or EnvoyFilters, Higress's WasmPlugins and Envoy Gateway's
EnvoyExtensionPolicies."""

from __future__ import annotations

import json
from typing import Any

from . import istio_versions, objects
from .model import Filter, FilterSet, Gateway, GatewayFilter

Obj = dict[str, Any]

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
EG_API = "gateway.envoyproxy.io/v1alpha1"
HIGRESS_API = "extensions.higress.io/v1alpha1"


def _gateway_metadata(gateway: Gateway, name: str, f: Filter | None = None) -> Obj:
    labels = {**objects.MANAGED_BY, **({"wasm-gitops.io/filter": f.name} if f else {}), "wasm-gitops.io/gateway": gateway.name}
    return {"name": name, "namespace": gateway.namespace, "labels": labels}


def _gateway_target(name: str, kind: str = "Gateway") -> Obj:
    return {"group": GATEWAY_API_GROUP, "kind": kind, "name": name}


def istio_gateway_objects(fs: FilterSet, gateway: Gateway) -> list[tuple[str, Obj]]:
    """(file, object) per filter of an Istio ingress gateway. Without rules each filter is a WasmPlugin;
    once a filter has rules the gateway's filters are EnvoyFilters, so that one ordering (priority, each
    inserted before the router) holds for all of them."""
    scoped = any(gf.rules for gf in gateway.filters)
    found = []
    for index, gf in enumerate(gateway.filters):
        if scoped:
            found.append((f"{gf.filter.name}.envoyfilter.yaml", istio_gateway_envoy_filter(fs, gateway, index, gf)))
        elif gateway.output == "TrafficExtension":
            found.append((f"{gf.filter.name}.trafficextension.yaml",
                          istio_gateway_traffic_extension(fs, gateway, index, gf)))
        else:
            found.append((f"{gf.filter.name}.wasmplugin.yaml", istio_gateway_wasm_plugin(fs, gateway, index, gf)))
    return found


def istio_gateway_wasm_plugin(fs: FilterSet, gateway: Gateway, index: int, gf: GatewayFilter) -> Obj:
    """A WasmPlugin for the gateway's pods: by targetRefs to the Gateway API Gateway where this Istio has
    them (they exclude a selector), else by the gateway Deployment's labels. No match: a gateway has one
    listener class, and every listener of it gets the filter."""
    f = gf.filter
    spec: Obj = {}
    if gateway.gateway_ref is not None and istio_versions.supports(fs.istio, "WasmPlugin.targetRefs"):
        spec["targetRefs"] = [_gateway_target(gateway.gateway_ref)]
    else:
        spec["selector"] = {"matchLabels": dict(gateway.selector)}
    spec.update(objects.wasm_plugin_fields(fs, f, f.oci_url or "", gf.config, len(gateway.filters) - index))
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": _gateway_metadata(gateway, f"{gateway.name}-{f.name}", f), "spec": spec}


def istio_gateway_traffic_extension(fs: FilterSet, gateway: Gateway, index: int, gf: GatewayFilter) -> Obj:
    """The gateway's WasmPlugin as a TrafficExtension (Istio >= 1.30, when the spec asks for them): the
    same attachment and place, the Wasm settings under `wasm`."""
    spec = istio_gateway_wasm_plugin(fs, gateway, index, gf)["spec"]
    wasm: Obj = {key: spec.pop(key) for key in ("url", "sha256", "pluginName", "pluginConfig") if key in spec}
    spec.pop("failStrategy", None)
    wasm["failStrategy"] = "FAIL_OPEN" if gf.filter.fail_open else "FAIL_CLOSE"
    spec["wasm"] = wasm
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "TrafficExtension",
            "metadata": _gateway_metadata(gateway, f"{gateway.name}-{gf.filter.name}", gf.filter), "spec": spec}


def gateway_instances(gateway: Gateway, gf: GatewayFilter) -> list[tuple[str, str | None, bool]]:
    """(filter name in Envoy, its configuration, on by default) of each instance of a scoped filter: the
    default instance (where no rule matches), then one per rule, on only in the rule's virtual hosts."""
    base = f"{gateway.namespace}.{gateway.name}-{gf.filter.name}"
    found = [(base, gf.config, True)] if gf.global_ else []
    found += [(f"{base}-rule-{k}", rule.config, False) for k, rule in enumerate(gf.rules)]
    return found


def _ecds_wasm(f: Filter, name: str, config: str | None) -> Obj:
    """The Wasm filter as an extension configuration: istio-agent sees the remote code in ECDS, pulls the
    image (checking the digest) and hands Envoy a local file (pkg/wasm/convert.go); the cluster is never
    used, as in istiod's own WasmPlugin translation (pilot/pkg/model/extensions.go)."""
    plugin: Obj = {"name": name, "root_id": f.root_id}
    if config is not None:
        plugin["configuration"] = {"@type": objects.STRING_VALUE, "value": config}
    plugin["vm_config"] = {"vm_id": name, "runtime": f.runtime, "code": {"remote": {
        "http_uri": {"uri": f.oci_url, "cluster": "_", "timeout": "30s"}, "sha256": f.pulled_sha256}}}
    plugin["fail_open"] = f.fail_open
    return {"name": name, "typed_config": {"@type": objects.WASM_TYPE, "config": plugin}}


def _per_filter(on: str, off: list[str]) -> Obj:
    states: Obj = {on: {"@type": FILTER_CONFIG, "config": {}}}
    states.update({name: {"@type": FILTER_CONFIG, "disabled": True} for name in off})
    return {"typed_per_filter_config": states}


def _scope_patches(gateway: Gateway, gf: GatewayFilter, instances: list[tuple[str, str | None, bool]]) -> list[Obj]:
    """VIRTUAL_HOST patches for the rules' domains and HTTP_ROUTE patches for their named routes, so that
    the first rule matching a request is the one that runs. Envoy lets the route's setting win over its
    virtual host's: a route patch therefore also switches off a later domain rule's instance on that host,
    and is left out where an earlier domain rule already covers the host."""
    default = [instances[0][0]] if gf.global_ else []
    rule_names = [name for name, _, on in instances if not on]
    first_domain: dict[str, int] = {}
    for k, rule in enumerate(gf.rules):
        for domain in rule.domain:
            first_domain.setdefault(domain, k)
    hosts = {r.name: r.hostnames for r in gateway.http_routes}
    rc = {"portNumber": gateway.port}
    patches: list[Obj] = []
    for k, rule in enumerate(gf.rules):
        for domain in rule.domain:
            if first_domain[domain] == k:
                patches.append({"applyTo": "VIRTUAL_HOST", "match": {"context": "GATEWAY", "routeConfiguration": {
                    **rc, "vhost": {"name": f"{domain}:{gateway.port}"}}},
                    "patch": {"operation": "MERGE", "value": _per_filter(rule_names[k], default)}})
        for route in rule.http_route:
            for host in hosts.get(route, ()):
                j = first_domain.get(host)  # the domain rule that covers the route's host, if any
                if j is not None and j < k:
                    continue
                off = default + ([rule_names[j]] if j is not None else [])
                patches.append({"applyTo": "HTTP_ROUTE", "match": {"context": "GATEWAY", "routeConfiguration": {
                    **rc, "vhost": {"name": f"{host}:{gateway.port}", "route": {"name": route}}}},
                    "patch": {"operation": "MERGE", "value": _per_filter(rule_names[k], off)}})
    return patches


def istio_gateway_envoy_filter(fs: FilterSet, gateway: Gateway, index: int, gf: GatewayFilter) -> Obj:
    """One EnvoyFilter per scoped filter, patching what istiod builds for the gateway: each instance an
    extension configuration (EXTENSION_CONFIG) and an HTTP filter before the router that names it, a rule's
    instance disabled in the listener; then each rule's virtual hosts (istiod names them <host>:<port>,
    pilot/pkg/networking/core/gateway.go) and named routes (a VirtualService http route's name,
    core/route/route.go) turn their instance on and the default instance off."""
    listener = {"filterChain": {"filter": {"name": objects.HCM, "subFilter": {"name": objects.ROUTER}}}}
    instances = gateway_instances(gateway, gf)
    patches: list[Obj] = []
    for name, config, _ in instances:
        patches.append({"applyTo": "EXTENSION_CONFIG",
                        "patch": {"operation": "ADD", "value": _ecds_wasm(gf.filter, name, config)}})
    for name, _, on in instances:
        value: Obj = {"name": name, "config_discovery": {
            "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
            "type_urls": [objects.WASM_TYPE]}}
        if not on:
            value["disabled"] = True
        patches.append({"applyTo": "HTTP_FILTER", "match": {"context": "GATEWAY", "listener": listener},
                        "patch": {"operation": "INSERT_BEFORE", "value": value}})
    patches += _scope_patches(gateway, gf, instances)
    spec: Obj = {"workloadSelector": {"labels": dict(gateway.selector)}}
    if istio_versions.supports(fs.istio, "EnvoyFilter.priority"):
        spec["priority"] = index
    spec["configPatches"] = patches
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": _gateway_metadata(gateway, f"{gateway.name}-{gf.filter.name}", gf.filter), "spec": spec}


def _eg_wasm(f: Filter, config: str | None) -> Obj:
    """One entry of an EnvoyExtensionPolicy's wasm list: the image by digest, its manifest digest as
    the sha256 Envoy Gateway's cache checks (internal/wasm/cache.go compares the image digest)."""
    entry: Obj = {"name": f.name}
    if f.root_id:
        entry["rootID"] = f.root_id
    url = (f.oci_url or "").removeprefix("oci://")
    entry["code"] = {"type": "Image", "image": {"url": url, "sha256": f.pulled_sha256}}
    if config is not None:
        entry["config"] = json.loads(config)
    entry["failOpen"] = f.fail_open
    return entry


def route_config(gf: GatewayFilter, route: str) -> tuple[bool, str | None]:
    """Whether filter gf runs on HTTPRoute `route`, and with which configuration: its first rule naming
    the route, else the gateway's when the filter is global."""
    for rule in gf.rules:
        if route in rule.http_route:
            return True, rule.config
    return gf.global_, gf.config


def envoy_extension_policies(gateway: Gateway) -> list[tuple[str, Obj]]:
    """gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicies: one on the Gateway with every global filter,
    and one per HTTPRoute a rule names. Envoy Gateway merges none by default (mergeType unset: "only the
    most specific configuration takes effect"), so a route's policy lists every filter that runs there,
    in the spec's order, each with the configuration it has on that route."""
    found = []
    on_gateway = [_eg_wasm(gf.filter, gf.config) for gf in gateway.filters if gf.global_]
    if on_gateway:
        found.append(("gateway.envoyextensionpolicy.yaml", {
            "apiVersion": EG_API, "kind": "EnvoyExtensionPolicy",
            "metadata": _gateway_metadata(gateway, gateway.name),
            "spec": {"targetRefs": [_gateway_target(gateway.target_gateway)], "wasm": on_gateway}}))
    named = dict.fromkeys(r for gf in gateway.filters for rule in gf.rules for r in rule.http_route)
    for route in sorted(named):
        wasm = [_eg_wasm(gf.filter, config) for gf in gateway.filters
                for runs, config in [route_config(gf, route)] if runs]
        found.append((f"httproute-{route}.envoyextensionpolicy.yaml", {
            "apiVersion": EG_API, "kind": "EnvoyExtensionPolicy",
            "metadata": _gateway_metadata(gateway, f"{gateway.name}-{route}"),
            "spec": {"targetRefs": [_gateway_target(route, "HTTPRoute")], "wasm": wasm}}))
    return found


def _higress_wasm_plugin(gateway: Gateway, index: int, gf: GatewayFilter) -> Obj:
    """extensions.higress.io/v1alpha1 WasmPlugin: the Higress controller turns defaultConfig and each
    matchRule into the plugin's configuration (its rules under `_rules_`, with `_match_domain_`,
    `_match_route_`, `_match_service_`: pkg/ingress/config/ingress_config.go), and its SDKs pick the
    first rule that matches a request; it reads WasmPlugins only from its own namespace."""
    f = gf.filter
    spec: Obj = {"url": f.oci_url, "sha256": f.pulled_sha256}
    if f.root_id:
        spec["pluginName"] = f.root_id
    if f.phase and f.phase != "UNSPECIFIED_PHASE":
        spec["phase"] = f.phase
    # Higher priority runs first within a phase, as in Istio: count down so the chain follows the list.
    spec["priority"] = f.priority if f.priority is not None else len(gateway.filters) - index
    spec["failStrategy"] = "FAIL_OPEN" if f.fail_open else "FAIL_CLOSE"
    if not gf.global_:
        spec["defaultConfigDisable"] = True
    elif gf.config is not None:
        spec["defaultConfig"] = json.loads(gf.config)
    rules = []
    for rule in gf.rules:
        entry: Obj = {}
        for key, values in (("domain", rule.domain), ("ingress", rule.ingress), ("service", rule.service)):
            if values:
                entry[key] = list(values)
        entry["config"] = json.loads(rule.config)
        rules.append(entry)
    if rules:
        spec["matchRules"] = rules
    return {"apiVersion": HIGRESS_API, "kind": "WasmPlugin",
            "metadata": _gateway_metadata(gateway, f"{gateway.name}-{f.name}", f), "spec": spec}


def higress_wasm_plugins(gateway: Gateway) -> list[tuple[str, Obj]]:
    """(file, object) per filter of a Higress gateway: one WasmPlugin each."""
    return [(f"{gf.filter.name}.higress-wasmplugin.yaml", _higress_wasm_plugin(gateway, index, gf))
            for index, gf in enumerate(gateway.filters)]
