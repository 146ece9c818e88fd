"""The services: which filters each loads, as what output kind, into which pods."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .. import istio_versions
from ..model import DEFAULTS, Filter, OutputKind, Service, ServiceFilter
from .context import Path_, SpecContext, is_json_object
from .filters import Filters
from .resources import Resources, selector
from .tests import tests


def known_filter(ctx: SpecContext, npath: Path_, fname: str, filters: Filters) -> Filter | None:
    """The filter a service or gateway names, or None: broken (reported at its wasm) or unknown (reported here)."""
    if fname in filters.broken:
        return None
    if fname not in filters.by_name:
        known = sorted(filters.by_name)
        guess = difflib.get_close_matches(fname, known, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else f"declared: {', '.join(known) or 'none'}"
        ctx.error(npath, f"unknown filter {fname!r}; {hint}")
        return None
    return filters.by_name[fname]


def output_kind(raw: dict[str, Any], fallback: OutputKind | None = None) -> OutputKind:
    """What `raw` (the spec, a cluster or a service) renders as: its own output kind, else the fallback's."""
    default = fallback if fallback is not None else DEFAULTS.output_kind
    kind: OutputKind = (raw.get("output") or {}).get("kind", default)
    return kind


def services(ctx: SpecContext, filters: Filters, version: tuple[int, int], resources: Resources) -> list[Service]:
    raw_services: list[dict[str, Any]] = ctx.data.get("services", [])
    top_output = output_kind(ctx.data)
    out: list[Service] = []
    names: set[str] = set()
    workloads: dict[tuple[str, str], str] = {}
    resource_owner: dict[str, str] = {}
    resources.reader.prefetch([path for raw in raw_services for res in raw["resources"]
                               if isinstance(path := resources.directory(res), Path)])
    for i, raw in enumerate(raw_services):
        p: Path_ = ("services", i)
        name = raw["name"]
        if not ctx.unique(p + ("name",), "service", name, names, " (each names an overlay)"):
            continue
        namespace = raw.get("namespace", DEFAULTS.namespace)
        key = (namespace, raw["deployment"])
        if key in workloads:
            ctx.error(p + ("deployment",), f"Deployment {namespace}/{raw['deployment']} is already patched by "
                      f"service {workloads[key]!r}; list all its filters in one service")
        workloads.setdefault(key, name)
        output = output_kind(raw, top_output)
        _output_gates(ctx, p + ("output", "kind") if "output" in raw else ("output", "kind"), output, version)
        service_filters = _service_filters(ctx, p, raw, filters, output)
        if output in ("WasmPlugin", "TrafficExtension"):
            _wasm_plugin_limits(ctx, p, raw, service_filters, (filters, version))
        found = selector(ctx, resources, p, raw, resource_owner)
        out.append(Service(
            name=name, namespace=namespace, deployment=raw["deployment"],
            selector=found or (), resources=tuple(raw["resources"]),
            context=raw.get("context", DEFAULTS.context), filters=service_filters,
            proxy_log_level=tuple(sorted((raw.get("proxyLogLevel") or {}).items())), output=output,
            tests=tests(ctx, p, raw, "service"),
        ))
    return out


def _output_gates(ctx: SpecContext, opath: Path_, output: OutputKind, version: tuple[int, int]) -> None:
    if output == "WasmPlugin" and not istio_versions.supports(version, "WasmPlugin"):
        ctx.error(opath, f"WasmPlugin needs Istio 1.12 or later, the spec targets "
                  f"{ctx.data['istio']}; use output kind EnvoyFilter or raise istio")
    if output == "TrafficExtension" and not istio_versions.supports(version, "TrafficExtension"):
        ctx.error(opath, f"TrafficExtension needs Istio 1.30 or later, the spec targets "
                  f"{ctx.data['istio']}; use output kind WasmPlugin or raise istio")


def _wasm_plugin_limits(ctx: SpecContext, p: Path_, raw: dict[str, Any], chosen: tuple[ServiceFilter, ...],
                        target: tuple[Filters, tuple[int, int]]) -> None:
    """What a WasmPlugin of the target Istio cannot say is an error where the user said it."""
    filters, version = target
    context = raw.get("context", DEFAULTS.context)
    if context == "SIDECAR_OUTBOUND" and not istio_versions.supports(version, "WasmPlugin.match"):
        ctx.error(p + ("context",), "a WasmPlugin for SIDECAR_OUTBOUND needs match.mode CLIENT, which "
                  "arrived in Istio 1.16; raise istio or use output kind EnvoyFilter")
    for sf in chosen:
        f = sf.filter
        index = filters.index[f.name]
        fp: Path_ = ("filters", index)
        if f.fail_open and not istio_versions.supports(version, "WasmPlugin.failStrategy"):
            ctx.error(fp + ("failOpen",), f"failOpen for a WasmPlugin needs failStrategy, which arrived "
                      f"in Istio 1.19 (the spec targets {ctx.data['istio']}); raise istio or use "
                      "output kind EnvoyFilter")
        if sf.config is not None and not is_json_object(sf.config):
            ctx.error(fp + ("config",), "a WasmPlugin's pluginConfig is a map; write config as a map "
                      "(or use output kind EnvoyFilter, which passes any string)")
        raw_filter = ctx.data["filters"][index]
        for key, default in (("vmId", f.name), ("runtime", DEFAULTS.runtime),
                             ("allowPrecompiled", DEFAULTS.allow_precompiled)):
            if key in raw_filter and raw_filter[key] != default:
                ctx.warn(fp + (key,), f"{key} has no WasmPlugin field: istio-agent chooses it; it is "
                         f"ignored for service {raw['name']!r}")


def _mixed(fname: str) -> str:
    return (f"filter {fname!r} shares this service with filters delivered the other way (ConfigMap and image "
            "volume): the ConfigMaps are mounted read-only at /var/local/lib/wasm-filters, where the kubelet "
            "cannot create the image volumes' mount points; deliver this service's filters the same way")


def _delivery_problem(fname: str, f: Filter, output: str, chosen: list[ServiceFilter]) -> list[str]:
    """Why this service cannot load the filter as it is delivered, next to the filters chosen before it."""
    problems = []
    if f.binary.is_oci and output not in ("WasmPlugin", "TrafficExtension"):
        problems.append(f"filter {fname!r} is an oci:// image, which only WasmPlugin can load; "
                        "set output kind WasmPlugin for this service")
    elif f.delivery == "oci" and output == "EnvoyFilter":
        problems.append(f"filter {fname!r} is delivered as an image istio-agent pulls (delivery oci), "
                        "which an EnvoyFilter cannot ask for; set output kind WasmPlugin or TrafficExtension "
                        "for this service, or delivery imageVolume for the filter")
    if (f.delivery == "imageVolume" and any(c.filter.in_configmap for c in chosen)) or \
            (f.in_configmap and any(c.filter.delivery == "imageVolume" for c in chosen)):
        problems.append(_mixed(fname))
    return problems


def _service_filters(ctx: SpecContext, p: Path_, raw: dict[str, Any], filters: Filters,
                     output: str) -> tuple[ServiceFilter, ...]:
    chosen: list[ServiceFilter] = []
    seen: set[str] = set()
    for j, entry in enumerate(raw["filters"]):
        fp = p + ("filters", j)
        fname = entry if isinstance(entry, str) else entry["name"]
        npath = fp if isinstance(entry, str) else fp + ("name",)
        f = known_filter(ctx, npath, fname, filters)
        if f is None:
            continue
        if fname in seen:
            ctx.error(npath, f"filter {fname!r} is listed twice for this service; list it once")
            continue
        seen.add(fname)
        for problem in _delivery_problem(fname, f, output, chosen):
            ctx.error(npath, problem)
        config = f.config
        own = isinstance(entry, dict) and "config" in entry
        if own:
            config = ctx.config_text(fp + ("config",), entry["config"])
            if f.config_schema is not None:
                ctx.check_config(fp + ("config",), entry, "config", f.config_schema)
        chosen.append(ServiceFilter(f, config, own))
    return tuple(chosen)
