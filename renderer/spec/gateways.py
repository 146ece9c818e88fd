"""The gateways: Higress WasmPlugins, each filter an image the gateway pulls, scoped by match rules."""

from __future__ import annotations

from typing import Any

from .. import config_schema
from ..model import DEFAULTS, Gateway, GatewayFilter, GatewayRule
from . import planes
from .context import Path_, SpecContext, is_json_object
from .filters import Filters
from .services import known_filter
from .tests import tests as gateway_tests


def gateways(ctx: SpecContext, filters: Filters, version: tuple[int, int]) -> list[Gateway]:
    out: list[Gateway] = []
    services = {raw["name"] for raw in ctx.data.get("services", [])}
    names: set[str] = set()
    for i, raw in enumerate(ctx.data.get("gateways", [])):
        p: Path_ = ("gateways", i)
        name = raw["name"]
        if not ctx.unique(p + ("name",), "gateway", name, names, " (each names an overlay)"):
            continue
        if name in services:
            ctx.error(p + ("name",), f"gateway name {name!r} is also a service's name, and both would be "
                      f"overlays/{name}/; rename one")
        chosen: list[GatewayFilter] = []
        seen: set[str] = set()
        for j, entry in enumerate(raw["filters"]):
            gf = gateway_filter(ctx, p + ("filters", j), entry, filters, seen, raw["controlPlane"])
            if gf is not None:
                chosen.append(gf)
        out.append(planes.gateway(raw, p, ctx, chosen, gateway_tests(ctx, p, raw, "gateway"), version,
                                  (ctx.data.get("output") or {}).get("kind", DEFAULTS.output_kind)))
    return out


def gateway_filter(ctx: SpecContext, fp: Path_, entry: str | dict[str, Any], filters: Filters,
                   seen: set[str], plane: str) -> GatewayFilter | None:
    raw = {"name": entry} if isinstance(entry, str) else entry
    npath = fp if isinstance(entry, str) else fp + ("name",)
    fname = raw["name"]
    f = known_filter(ctx, npath, fname, filters)
    if f is None:
        return None
    if fname in seen:
        ctx.error(npath, f"filter {fname!r} is listed twice for this gateway; list it once")
        return None
    seen.add(fname)
    if f.oci_url is None:
        # A gateway is not a workload this tree patches: nothing mounts a ConfigMap into it.
        ctx.error(npath, f"filter {fname!r} is not delivered as an image, and {planes.A[plane]} gateway "
                  "pulls its modules from a registry: give the filter image: and delivery: oci, and run 'wasm-gitops "
                  f"push {fname}' (or point wasm at an oci:// reference)")
        return None
    config = f.config
    cpath: Path_ = ("filters", filters.index[fname], "config")
    if "config" in raw:
        cpath = fp + ("config",)
        config = ctx.config_text(cpath, raw["config"])
        if f.config_schema is not None:
            ctx.check_config(cpath, raw, "config", f.config_schema)
    if config is not None and planes.needs_map(plane) and not is_json_object(config):
        ctx.error(cpath, planes.NOT_A_MAP[plane][0])
    global_ = bool(raw.get("global", DEFAULTS.gateway_global))
    if not global_ and not raw.get("rules"):
        ctx.error(fp + ("global",), "global: false runs the filter only where a rule matches, and there are "
                  "no rules: add rules or remove the filter from this gateway")
    return GatewayFilter(f, config if global_ else None, global_, _rules(ctx, fp, raw, f.config_schema, plane))


def _rules(ctx: SpecContext, fp: Path_, raw: dict[str, Any],
           schema: config_schema.ConfigSchema | None, plane: str) -> tuple[GatewayRule, ...]:
    rules: list[GatewayRule] = []
    for k, rule in enumerate(raw.get("rules", [])):
        rp = fp + ("rules", k)
        text = ctx.config_text(rp + ("config",), rule["config"])
        if text is None and rule["config"] is not None:
            continue  # .inf or .nan: reported by config_text
        if text is None or (planes.needs_map(plane) and not is_json_object(text)):
            ctx.error(rp + ("config",), planes.NOT_A_MAP[plane][1])
            continue
        if schema is not None:
            ctx.check_config(rp + ("config",), rule, "config", schema)
        rules.append(GatewayRule(tuple(rule.get("domain", ())), tuple(rule.get("ingress", ())),
                                 tuple(rule.get("service", ())), text, tuple(rule.get("httpRoute", ()))))
    return tuple(rules)
