"""The report: every figure as data (the --json shape, schemas/cost-report.schema.json) and as text."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..envoy.process import EnvoyServer
from .chains import HEADER_MUTATION, Chain
from .load import LoadRun, Settings
from .probe import Effect
from .readings import CpuSample, listener_load_ms
from .stats import REASONS, Comparison, Pair, Summary, compare_difference, compare_ratio, ratio_of_effects

SCHEMA_VERSION = 1
# control is none again, in an Envoy of its own: what the method measures between two identical
# listeners is the floor under every difference it reports.
VARIANTS = ("none", "wasm", "native", "control")


@dataclass
class VariantResult:
    name: str
    ready_ms: list[float] = field(default_factory=list)
    starts: list[EnvoyServer] = field(default_factory=list)  # their logs say how long the listeners took
    paced: list[LoadRun] = field(default_factory=list)
    saturated: list[LoadRun] = field(default_factory=list)
    rss: int = 0  # after the load runs
    rss_ready: dict[int, int] = field(default_factory=dict)  # Envoy workers -> RSS when just ready
    memory: dict[str, int] = field(default_factory=dict)  # admin /memory, bytes
    wasm_vms_active: int = 0
    wasm_vms_created: int = 0
    load_ms: list[float] = field(default_factory=list)  # listener build times from the logs of the starts

    def read_logs(self) -> None:
        """Once the Envoys have stopped (their logs complete): the listener build time of every
        start, or none at all when any log lacks the lines."""
        times = [listener_load_ms(server.log()) for server in self.starts]
        self.load_ms = [t for t in times if t is not None] if all(t is not None for t in times) else []


@dataclass
class ChainResult:
    chain: Chain
    same_as: list[Chain]  # the other chains equal to this one, measured with it
    native: Effect | None  # None when the chain does more than add headers
    effect: Effect
    variants: dict[str, VariantResult]


def _variant_json(v: VariantResult) -> dict[str, Any]:
    return {
        "paced": {
            "rps": Summary.of([r.rps for r in v.paced]).as_json(),
            "p50Us": Summary.of([r.p50_us for r in v.paced]).as_json(),
            "p99Us": Summary.of([r.p99_us for r in v.paced]).as_json(),
        },
        "saturation": {
            "rps": Summary.of([r.rps for r in v.saturated]).as_json(),
            "cpuUsPerRequest": Summary.of([r.cpu_us_per_request for r in v.saturated]).as_json(2),
            "p50Us": Summary.of([r.p50_us for r in v.saturated]).as_json(),
            "p99Us": Summary.of([r.p99_us for r in v.saturated]).as_json(),
        },
        "readyMs": Summary.of(v.ready_ms).as_json(),
        "listenerLoadMs": Summary.of(v.load_ms).as_json() if v.load_ms else None,
        "foreignCpuPercent": Summary.of([100 * r.foreign_share for r in [*v.paced, *v.saturated]]).as_json(),
        "memory": {"rssBytes": v.rss, "rssReadyBytes": v.rss_ready.get(1, 0), "allocatedBytes": v.memory.get("allocated", 0),
                   "heapBytes": v.memory.get("heap_size", 0),
                   "wasmVmsActive": v.wasm_vms_active, "wasmVmsCreated": v.wasm_vms_created},
    }


def _paced(v: VariantResult, figure: str) -> list[float]:
    return [getattr(r, figure) for r in v.paced]


def _saturated(v: VariantResult, figure: str) -> list[float]:
    return [getattr(r, figure) for r in v.saturated]


def _load_times(a: VariantResult, b: VariantResult, control: VariantResult) -> tuple[list[float], list[float], Pair]:
    """Envoy's own listener build times when every log has them, else start-to-ready wall times."""
    if a.load_ms and b.load_ms and control.load_ms:
        return a.load_ms, b.load_ms, (control.load_ms, b.load_ms)
    return a.ready_ms, b.ready_ms, (control.ready_ms, b.ready_ms)


def _against(a: VariantResult, b: VariantResult, control: VariantResult) -> dict[str, Any]:
    """What a costs over b (b being `none`), each figure judged against the control's difference."""
    added_rss = a.rss - b.rss

    def diff(pick: Callable[[VariantResult, str], list[float]], figure: str) -> Comparison:
        return compare_difference(pick(a, figure), pick(b, figure), (pick(control, figure), pick(b, figure)))

    return {
        "p50AddedUs": diff(_paced, "p50_us").as_json(),
        "p99AddedUs": diff(_paced, "p99_us").as_json(),
        "cpuAddedUsPerRequest": diff(_saturated, "cpu_us_per_request").as_json(2),
        "throughputRatio": compare_ratio(_saturated(a, "rps"), _saturated(b, "rps"),
                                         (_saturated(control, "rps"), _saturated(b, "rps"))).as_json(3),
        "loadAddedMs": compare_difference(*_load_times(a, b, control)).as_json(),
        "rssAddedBytes": added_rss,
        "rssPerWasmVmBytes": added_rss // a.wasm_vms_active if a.wasm_vms_active and added_rss > 0 else None,
        "rssPerExtraWorkerBytes": ((a.rss_ready[2] - a.rss_ready[1]) - (b.rss_ready[2] - b.rss_ready[1])
                                   if 2 in a.rss_ready and 2 in b.rss_ready else None),
    }


def _wasm_vs_native(wasm: VariantResult, native: VariantResult, none: VariantResult,
                    control: VariantResult) -> dict[str, Any]:
    cpu = "cpu_us_per_request"
    same = (_saturated(control, cpu), _saturated(none, cpu))
    wasm_cpu = compare_difference(_saturated(wasm, cpu), _saturated(none, cpu), same)
    native_cpu = compare_difference(_saturated(native, cpu), _saturated(none, cpu), same)
    return {
        # The source documentation's "about 70 % of native speed": Wasm throughput over native's.
        "throughputRatio": compare_ratio(_saturated(wasm, "rps"), _saturated(native, "rps"),
                                         (_saturated(control, "rps"), _saturated(none, "rps"))).as_json(3),
        "cpuAddedRatio": ratio_of_effects(wasm_cpu, native_cpu).as_json(2),
    }


def build_report(results: Sequence[ChainResult], machine_info: Mapping[str, Any], settings: Settings,
                 before: CpuSample, after: CpuSample, wall_s: float,
                 skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
    services: list[dict[str, Any]] = []
    filters: list[dict[str, Any]] = []
    for result in results:
        v = result.variants
        entry: dict[str, Any] = {
            "filters": list(result.chain.filters),
            "effect": result.effect.describe(),
            "native": ({"filter": HEADER_MUTATION, "does": result.native.describe()} if result.native
                       else None),
            "variants": {name: _variant_json(r) for name, r in v.items()},
            "wasm": _against(v["wasm"], v["none"], v["control"]),
            "nativeCost": _against(v["native"], v["none"], v["control"]) if "native" in v else None,
            "wasmVsNative": _wasm_vs_native(v["wasm"], v["native"], v["none"], v["control"]) if "native" in v else None,
        }
        for member in [result.chain, *result.same_as]:
            if member.alone:
                filters.append({"filter": member.service, "measuredAs": result.chain.service, **entry})
            else:
                services.append({"service": member.service, "namespace": member.namespace,
                                 "measuredAs": result.chain.service, **entry})
    total = max(1, after.total - before.total)
    shares = [100 * r.foreign_share for res in results for v in res.variants.values() for r in [*v.paced, *v.saturated]]
    return {
        "schemaVersion": SCHEMA_VERSION,
        "kind": "wasm-gitops-cost",
        "machine": dict(machine_info),
        "settings": {"rounds": settings.rounds, "seconds": settings.seconds, "rate": settings.rate,
                     "connections": settings.connections, "starts": settings.starts},
        "run": {"wallSeconds": round(wall_s, 1),
                "stealPercent": round(100 * (after.steal - before.steal) / total, 2),
                "idlePercent": round(100 * (after.idle - before.idle) / total, 1),
                "foreignCpuPercent": Summary.of(shares).as_json() if shares else None},
        "services": sorted(services, key=lambda s: (s["namespace"], s["service"])),
        "filters": sorted(filters, key=lambda f: f["filter"]),
        "skipped": [{"service": name, "reason": reason} for name, reason in sorted((skipped or {}).items())],
    }


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2g}"


def _fmt(c: Mapping[str, Any], unit: str, *, ratio: bool = False, signed: bool = True) -> str:
    """A comparison in words: its value and spread, or why there is none (with the figures that say so)."""

    def amount(x: float, sign: bool = False) -> str:
        if ratio:
            return f"{100 * x:{'+' if sign else ''}.1f} %"
        return f"{'+' if sign and x > 0 else ''}{_num(x)}{unit}"

    floor = c.get("floor")
    if c["value"] is None:
        if c["reason"] == "noise":
            effect = amount(-c["effect"] if ratio else c["effect"], True)
            if floor is not None and (c["spread"] is None or floor >= c["spread"]):
                return f"not resolved (two identical listeners differ by {amount(floor)}: not less than the effect, {effect})"
            spread = amount(c["spread"]) if c["spread"] is not None else "undefined"
            return f"not resolved (the spread, {spread}, is not smaller than the effect, {effect})"
        return f"not resolved ({REASONS[c['reason']]})"
    bounds = ", ".join(x for x in (
        f"spread {amount(c['spread'])}" if c["spread"] is not None else "",
        f"control {amount(floor)}" if floor is not None else "") if x)
    if ratio:
        return f"{c['value']:.3g}{unit} ({-100 * c['effect']:+.1f} %{', ' + bounds if bounds else ''})"
    return f"{'+' if signed else ''}{_num(c['value'])}{unit}" + (f" ({bounds})" if bounds else "")


def _mib(n: int | None, sign: str = "+") -> str:
    return "n/a" if n is None else f"{n / 1048576:{sign}.1f} MiB"


_TABLE = ("  {:<8}{:>8}{:>8}{:>9}{:>10}{:>12}{:>9}{:>10}{:>9}{:>9}")


def _measurement_lines(m: Mapping[str, Any]) -> list[str]:
    """One measured chain: the variants' medians, then each comparison or why there is none."""
    lines = [f"  the chain {m['effect']}",
             _TABLE.format("", "paced/s", "p50 µs", "p99 µs", "sat. rps", "CPU µs/req", "load ms", "ready ms",
                           "RSS MiB", "Wasm VMs")]
    for name in VARIANTS:
        v = m["variants"].get(name)
        if v is None:
            continue
        lines.append(_TABLE.format(
            name, f"{v['paced']['rps']['median']:.0f}", f"{v['paced']['p50Us']['median']:.0f}",
            f"{v['paced']['p99Us']['median']:.0f}", f"{v['saturation']['rps']['median']:.0f}",
            f"{v['saturation']['cpuUsPerRequest']['median']:.1f}",
            "-" if v["listenerLoadMs"] is None else f"{v['listenerLoadMs']['median']:.0f}",
            f"{v['readyMs']['median']:.0f}", f"{v['memory']['rssBytes'] / 1048576:.1f}",
            str(v["memory"]["wasmVmsActive"])))
    w = m["wasm"]
    lines += [
        "  wasm against none:",
        f"    latency p50 {_fmt(w['p50AddedUs'], ' µs')}, p99 {_fmt(w['p99AddedUs'], ' µs')}",
        f"    Envoy CPU per request {_fmt(w['cpuAddedUsPerRequest'], ' µs')}",
        f"    throughput at saturation {_fmt(w['throughputRatio'], ' x none', ratio=True)}",
        f"    memory {_mib(w['rssAddedBytes'])} RSS with {m['variants']['wasm']['memory']['wasmVmsActive']} Wasm VMs "
        f"({_mib(w['rssPerWasmVmBytes'], '')} each on average; each further Envoy worker "
        f"{_mib(w['rssPerExtraWorkerBytes'])})",
        f"    module load/compile {_fmt(w['loadAddedMs'], ' ms')}",
    ]
    if m["native"] is None:
        return [*lines, "  native: no native filter: the chain does more than add headers (or nothing visible)"]
    n, wn = m["nativeCost"], m["wasmVsNative"]
    return [
        *lines,
        f"  native ({m['native']['filter']}, {m['native']['does']}) against none:",
        f"    latency p50 {_fmt(n['p50AddedUs'], ' µs')}, Envoy CPU per request "
        f"{_fmt(n['cpuAddedUsPerRequest'], ' µs')}",
        f"    throughput at saturation {_fmt(n['throughputRatio'], ' x none', ratio=True)}",
        "  wasm against native:",
        f"    throughput at saturation {_fmt(wn['throughputRatio'], ' x native', ratio=True)}",
        f"    added CPU per request {_fmt(wn['cpuAddedRatio'], ' x native', signed=False)}",
    ]


def format_text(report: Mapping[str, Any]) -> str:
    m, s, run = report["machine"], report["settings"], report["run"]
    foreign = run["foreignCpuPercent"]
    lines = [
        f"machine: {m['cores']} cores ({m['cpuModel'] or 'unknown CPU'}), Envoy {m['envoyVersion']} with "
        f"--concurrency {m['envoyConcurrency']}, {m['loadGenerator']}",
        f"run: {s['rounds']} interleaved rounds of {s['seconds']} s runs (paced at {s['rate']}/s; saturated with "
        f"{s['connections']} connections) in {run['wallSeconds']} s; CPU steal {run['stealPercent']} %, other "
        f"processes {foreign['median']} % of the CPU (median; {min(foreign['runs'])}-{max(foreign['runs'])} %)",
        "medians over the rounds; spread = interquartile range; a difference is shown only when larger than its "
        "spread and than the difference between none and control (the same listener in two Envoys)",
    ]
    for svc in report["services"]:
        title = f"{svc['namespace']}/{svc['service']}: {', '.join(svc['filters'])}"
        if svc["measuredAs"] != svc["service"]:
            lines += ["", f"{title}: the same chain as {svc['measuredAs']}, measured once (see there)"]
        else:
            lines += ["", title, *_measurement_lines(svc)]
    for entry in report["filters"]:
        title = f"filter {entry['filter']} alone"
        if entry["measuredAs"] != entry["filter"]:
            lines += ["", f"{title}: the same chain as {entry['measuredAs']}, measured once (see there)"]
        else:
            lines += ["", title, *_measurement_lines(entry)]
    lines += [f"\n{item['service']}: not measured: {item['reason']}" for item in report["skipped"]]
    return "\n".join(lines) + "\n"


def format_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"
