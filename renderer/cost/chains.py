"""The listeners measured: each service's chain from the rendered tree (renderer.envoy.istio), the same
chain without its Wasm filters, with a native header_mutation instead, and the upstream that answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..envoy import istio
from ..errors import UsageError
from ..model import Context
from .load import MeasurementFailed
from .probe import PROBE_PATH, Effect

WASM_TYPE = istio.WASM_TYPE
HEADER_MUTATION = "envoy.filters.http.header_mutation"
HEADER_MUTATION_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"


@dataclass(frozen=True)
class Chain:
    """One service's HTTP filter chain (before the router), as its sidecar gets it (renderer.envoy.istio)."""

    service: str
    namespace: str
    context: Context
    filters: tuple[str, ...]  # the rendered objects, in chain order
    http_filters: tuple[dict[str, Any], ...]  # Envoy HttpFilter configs, the router excluded
    alone: bool = False  # a filter measured on its own (service is then the filter's name)


def chains_of(spec_path: Path, services: Sequence[str], module_dir: Path) -> tuple[list[Chain], dict[str, str]]:
    """The chains of the rendered tree of spec_path (all services, or those named), and the
    services left out with the reason. A filter pulled from an OCI registry by istio-agent has no
    module in the tree: its service cannot be measured (an error when it was named)."""
    from .. import core

    prepared = core.prepare(spec_path, None, keep_objects=True)
    fs = prepared.spec.filter_set
    known = {s.name for s in fs.services}
    unknown = [s for s in services if s not in known]
    if unknown:
        raise UsageError(f"no service {', '.join(map(repr, unknown))} in {spec_path.name} "
                         f"(services: {', '.join(sorted(known))})")
    skipped: dict[str, str] = {}
    for service in fs.services:
        remote = [sf.filter.name for sf in service.filters if sf.filter.binary.is_oci]
        if remote and (not services or service.name in services):
            skipped[service.name] = (f"{', '.join(remote)} {'is an OCI image' if len(remote) == 1 else 'are OCI images'} "
                                     "that istio-agent pulls: no module in the tree to load")
    named = [s for s in services if s in skipped]
    if named:
        raise UsageError("; ".join(f"service {s}: {skipped[s]}" for s in named))
    wanted = {s.name for s in fs.services if (not services or s.name in services) and s.name not in skipped}
    if not wanted:
        return [], skipped
    module_dir.mkdir(parents=True, exist_ok=True)
    try:
        found = istio.filter_set_chains(fs, prepared.plan.objects, module_dir, only=wanted)
    except istio.ChainError as e:
        raise MeasurementFailed(str(e)) from None
    chains = [Chain(c.service, c.namespace, c.context, tuple(str(f.plugin.get("name", f.object_name)) for f in c.filters),
                    tuple(f.http_filter for f in c.filters)) for c in found if c.filters]
    return chains, skipped


def filter_chains(spec_path: Path, names: Sequence[str], module_dir: Path) -> list[Chain]:
    """Each named filter on its own, with its configuration from the spec, as the EnvoyFilter
    rendered for it gives it to Envoy (istio.http_filter), in an inbound sidecar listener."""
    from ..spec import load_spec

    fs = load_spec(spec_path).filter_set
    by_name = {f.name: f for f in fs.filters}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"no filter {', '.join(map(repr, unknown))} in {spec_path.name} "
                         f"(filters: {', '.join(sorted(by_name))})")
    module_dir.mkdir(parents=True, exist_ok=True)
    chains = []
    for name in dict.fromkeys(names):
        f = by_name[name]
        if f.binary.is_oci:
            raise UsageError(f"filter {name}: an OCI image that istio-agent pulls: no module in the tree to load")
        try:
            http = istio.http_filter(fs, f, f.config, module_dir)
        except istio.ChainError as e:
            raise MeasurementFailed(str(e)) from None
        chains.append(Chain(name, "default", "SIDECAR_INBOUND", (name,), (http,), alone=True))
    return chains


def bootstrap_for(chain: Chain, http_filters: Sequence[dict[str, Any]], upstream_port: int) -> dict[str, Any]:
    """The service's listener, shaped as istiod shapes it for its context, with these filters."""
    listener = istio.listener(chain.service, chain.context, http_filters, "upstream",
                              service_host=f"{chain.service}.{chain.namespace}.svc.cluster.local")
    return istio.bootstrap([listener], [istio.cluster("upstream", upstream_port)])


def _address(port: int = 0) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


# The upstream answers load requests directly and, on the probe path only, echoes the request
# headers it received (so the probe sees what a filter did to the request). The Lua filter is
# disabled on the load route: the upstream's own cost must not vary with what is measured.
_ECHO_LUA = """
function envoy_on_request(handle)
  local lines = {}
  for key, value in pairs(handle:headers()) do
    lines[#lines + 1] = key .. ": " .. value
  end
  table.sort(lines)
  handle:respond({[":status"] = "200", ["content-type"] = "text/plain"}, table.concat(lines, "\\n"))
end
"""


def upstream_bootstrap() -> dict[str, Any]:
    lua = "envoy.filters.http.lua"
    routes: list[dict[str, Any]] = [
        {"match": {"path": PROBE_PATH}, "route": {"cluster": "unused"}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
         "typed_per_filter_config": {lua: {
             "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "disabled": True}}},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {"name": lua, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                           "default_source_code": {"inline_string": _ECHO_LUA}}},
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    return {
        "admin": {"address": _address()},
        "static_resources": {
            "listeners": [{"name": "upstream", "address": _address(), "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [{"name": "unused", "type": "STATIC", "connect_timeout": "1s",
                          "load_assignment": {"cluster_name": "unused", "endpoints": []}}],
        },
    }


def is_wasm(http_filter: Mapping[str, Any]) -> bool:
    """The Wasm filter, typed directly or, as Istio 1.7 renders it, inside a TypedStruct."""
    typed = http_filter.get("typed_config")
    if not isinstance(typed, Mapping):
        return False
    if typed.get("@type") in istio.TYPED_STRUCTS:
        return typed.get("type_url") == WASM_TYPE
    return typed.get("@type") == WASM_TYPE


def without_wasm(filters: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in filters if not is_wasm(f)]


def header_mutation(effect: Effect) -> dict[str, Any]:
    """Envoy's native filter doing what the chain was seen to do: add these headers."""

    def adds(headers: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        return [{"append": {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}}
                for k, v in headers]

    mutations: dict[str, Any] = {}
    if effect.request_added:
        mutations["request_mutations"] = adds(effect.request_added)
    if effect.response_added:
        mutations["response_mutations"] = adds(effect.response_added)
    return {"name": HEADER_MUTATION, "typed_config": {"@type": HEADER_MUTATION_TYPE, "mutations": mutations}}


def with_native(filters: Sequence[dict[str, Any]], effect: Effect) -> list[dict[str, Any]]:
    """The chain with its Wasm filters replaced by one header_mutation where the first one was."""
    out: list[dict[str, Any]] = []
    for f in filters:
        if not is_wasm(f):
            out.append(f)
        elif not any(o.get("name") == HEADER_MUTATION for o in out):
            out.append(header_mutation(effect))
    return out
