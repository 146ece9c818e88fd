"""The report: every figure as data (the --json shape, schemas/cost-report.schema.json) and as text."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..envoy.process import EnvoyServer
from .chains import HEADER_MUTATION, Chain
from .load import LoadRun, Settings
from .probe import Effect
from .readings import CpuSample, listener_load_ms
from .stats import Comparison, Pair, Summary, compare_difference, compare_ratio, ratio_of_effects

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
