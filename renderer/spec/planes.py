"""What a gateway's control plane can express: the checks of `gateways:` that its schema cannot make.

Each function takes the raw mapping as the spec holds it, its path in the document, and something that
records findings at a path (`error`, `warn`), and returns the model object. The filter entries arrive
already checked (known filter, delivered as an image, each configuration against its schema)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .. import istio_versions
from ..model import (
    DEFAULTS,
    GATEWAY_API_NAME_LABEL,
    ISTIO_GATEWAY_SELECTOR,
    ControlPlane,
    Gateway,
    GatewayFilter,
    HttpRoute,
    TestSpec,
)

Path = tuple[str | int, ...]

# An Istio gateway's per-domain configuration needs two Envoy fields: route.v3.FilterConfig.disabled,
# which turns a filter off or on per virtual host or route (Envoy 1.27.0, July 26, 2023: envoyproxy/envoy
# changelogs/1.27.0.yaml; API in PR #25927, implementation in PR #27210), and HttpFilter.disabled, which
# starts each rule's instance off in the listener (Envoy 1.28.0, October 18, 2023: changelogs/1.28.0.yaml;
# PR #30141). Istio 1.19 ships Envoy release/v1.27 and 1.20 ships release/v1.28 (istio/istio.io
# content/en/docs/releases/supported-releases/index.md, "Supported Envoy Versions"), so 1.20 is the first.
ISTIO_PER_ROUTE = (1, 20)
LABELS = {"higress": "Higress", "istio": "Istio", "envoy-gateway": "Envoy Gateway"}
A = {"higress": "a Higress", "istio": "an Istio", "envoy-gateway": "an Envoy Gateway"}
# Which rule keys each control plane can scope by; the schema accepts the union.
RULE_KEYS: dict[str, tuple[str, ...]] = {"higress": ("domain", "ingress", "service"), "istio": ("domain", "httpRoute"),
                                         "envoy-gateway": ("httpRoute",)}
# Gateway fields that mean something to one control plane only.
ONLY_FOR: dict[str, tuple[str, ...]] = {"selector": ("istio",), "port": ("istio",), "gatewayRef": ("istio", "envoy-gateway"),
                                        "httpRoutes": ("istio", "envoy-gateway")}


class Findings(Protocol):
    def error(self, path: Path, message: str) -> None: ...

    def warn(self, path: Path, message: str) -> None: ...


def gateway(raw: dict[str, Any], p: Path, report: Findings, filters: Sequence[GatewayFilter],
            tests: tuple[TestSpec, ...], istio: tuple[int, int], top_output: str = "EnvoyFilter") -> Gateway:
    """The gateway as its control plane will get it; an Istio gateway's filters are TrafficExtensions when
    the spec's output kind is (the checks of `output` already hold the Istio release to 1.30)."""
    plane: ControlPlane = raw["controlPlane"]
    for key, planes in ONLY_FOR.items():
        if key in raw and plane not in planes:
            report.error(p + (key,), f"{key} means nothing to {A[plane]} gateway (it is for "
                         f"{' and '.join(LABELS[x] for x in planes)}); remove it")
    _rule_keys(raw, p, report, plane)
    routes = _http_routes(raw, p, report) if plane != "higress" else ()
    if plane == "istio":
        _istio(raw, p, report, istio)
        if top_output == "TrafficExtension" and not istio_versions.supports(istio, "TrafficExtension"):
            report.error(p + ("controlPlane",), "the spec's output kind TrafficExtension needs Istio 1.30 or later "
                         "for this gateway too; use output kind WasmPlugin or raise istio")
    if plane != "higress":
        _route_rules(raw, p, report, {r.name for r in routes})
    ref = raw.get("gatewayRef")
    selector: tuple[tuple[str, str], ...] = ()
    if plane == "istio":
        default = ((GATEWAY_API_NAME_LABEL, ref),) if ref else ISTIO_GATEWAY_SELECTOR
        selector = tuple(sorted(raw["selector"].items())) if "selector" in raw else default
    return Gateway(raw["name"], plane, raw.get("namespace", DEFAULTS.gateway_namespace(plane)), tuple(filters),
                   selector=selector, gateway_ref=ref, port=int(raw.get("port", DEFAULTS.istio_gateway_port)), http_routes=routes,
                   tests=tests, output="TrafficExtension" if top_output == "TrafficExtension" else "WasmPlugin")


def _entries(raw: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(j, e) for j, e in enumerate(raw["filters"]) if isinstance(e, dict)]


def _rule_keys(raw: dict[str, Any], p: Path, report: Findings, plane: str) -> None:
    allowed = RULE_KEYS[plane]
    for j, entry in _entries(raw):
        for k, rule in enumerate(entry.get("rules", [])):
            for key in ("domain", "ingress", "service", "httpRoute"):
                if key in rule and key not in allowed:
                    report.error(p + ("filters", j, "rules", k, key),
                                 f"{A[plane]} gateway scopes a rule by {' or '.join(allowed)}, not by "
                                 f"{key}; write the rule with {allowed[0]}")


def _twice(what: str, name: str, first: int, rule: int) -> str:
    if first == rule:
        return f"{what} {name!r} is listed twice in this rule; list it once"
    return f"{what} {name!r} is already in rule {first} of this filter, which applies there first; remove it from one of them"


def _istio(raw: dict[str, Any], p: Path, report: Findings, istio: tuple[int, int]) -> None:
    version = ".".join(map(str, istio))
    if not istio_versions.supports(istio, "WasmPlugin"):
        report.error(p + ("controlPlane",), f"Istio {version} has no WasmPlugin, which pulls a gateway's modules "
                     "from a registry; target Istio 1.12 or later")
    scoped = False
    for j, entry in _entries(raw):
        seen: dict[str, int] = {}
        for k, rule in enumerate(entry.get("rules", [])):
            scoped = True
            for d, domain in enumerate(rule.get("domain", [])):
                if domain in seen:
                    # Each domain is one virtual host, and a virtual host has one configuration per filter.
                    report.error(p + ("filters", j, "rules", k, "domain", d), _twice("domain", domain, seen[domain], k))
                seen.setdefault(domain, k)
    if scoped and istio < ISTIO_PER_ROUTE:
        report.error(p + ("filters",), f"per-domain configuration on an Istio gateway needs Envoy's per-route "
                     f"filter enable and disable (Envoy 1.28, Istio 1.20), and Istio {version} has no such "
                     "Envoy; target Istio 1.20 or later, or remove the rules")


def _http_routes(raw: dict[str, Any], p: Path, report: Findings) -> tuple[HttpRoute, ...]:
    routes: list[HttpRoute] = []
    names: set[str] = set()
    for i, route in enumerate(raw.get("httpRoutes", [])):
        if route["name"] in names:
            report.error(p + ("httpRoutes", i, "name"), f"HTTPRoute {route['name']!r} is listed twice; list it once")
            continue
        names.add(route["name"])
        routes.append(HttpRoute(route["name"], tuple(route["hostnames"]), route.get("pathPrefix", "/")))
    return tuple(routes)


def _route_rules(raw: dict[str, Any], p: Path, report: Findings, routes: set[str]) -> None:
    for j, entry in _entries(raw):
        seen: dict[str, int] = {}
        for k, rule in enumerate(entry.get("rules", [])):
            for r, name in enumerate(rule.get("httpRoute", [])):
                rp = p + ("filters", j, "rules", k, "httpRoute", r)
                if name not in routes:
                    report.error(rp, f"HTTPRoute {name!r} is not in this gateway's httpRoutes; add it there "
                                 f"(declared: {', '.join(sorted(routes)) or 'none'})")
                elif name in seen:
                    report.error(rp, _twice("HTTPRoute", name, seen[name], k))
                seen.setdefault(name, k)


# (the configuration where no rule matches, a rule's) when either is not a map.
NOT_A_MAP: dict[str, tuple[str, str]] = {
    "higress": ("a Higress WasmPlugin's defaultConfig is a map; write this configuration as a map",
                "a Higress match rule's config is a map; write it as a map"),
    "istio": ("an Istio gateway's plugin configuration is a map (WasmPlugin pluginConfig); write it as a map",
              "an Istio gateway rule's config is a map, like the plugin configuration; write it as a map"),
    "envoy-gateway": ("", ""),  # any JSON value: Envoy Gateway passes it to the filter as JSON text
}


def needs_map(plane: str) -> bool:
    """Higress and Istio deliver a gateway configuration as a JSON map; Envoy Gateway passes any JSON."""
    return plane != "envoy-gateway"
