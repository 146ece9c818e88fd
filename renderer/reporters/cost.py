"""cost's report as text (the medians, then each comparison in words or why there is none) or JSON, and the
one line per service that a pull request comment carries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..cost.report import VARIANTS
from ..cost.stats import REASONS
from .base import document, reporter


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


def _entry(title: str, name: str, entry: Mapping[str, Any]) -> list[str]:
    """A service or a filter alone: its measurement, or which equal chain holds it."""
    if entry["measuredAs"] != name:
        return ["", f"{title}: the same chain as {entry['measuredAs']}, measured once (see there)"]
    return ["", title, *_measurement_lines(entry)]


@reporter("cost", "text")
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
        lines += _entry(f"{svc['namespace']}/{svc['service']}: {', '.join(svc['filters'])}", svc["service"], svc)
    for entry in report["filters"]:
        lines += _entry(f"filter {entry['filter']} alone", entry["filter"], entry)
    lines += [f"\n{item['service']}: not measured: {item['reason']}" for item in report["skipped"]]
    return "\n".join(lines) + "\n"


@reporter("cost", "json")
def format_json(report: Mapping[str, Any]) -> str:
    # The report carries its own schemaVersion (the cost report schema's); a NaN would not be JSON.
    return document(dict(report), finite=True)


def _figure(c: Mapping[str, Any], unit: str, *, ratio: bool = False) -> str:
    # A value only where the report resolved it: `effect` is the raw difference, never shown.
    if not c.get("resolved") or c.get("value") is None:
        return "not resolved"
    value = float(c["value"])
    return f"{value:.2f} x" if ratio else f"{value:+.1f} {unit}"


def cost_line(entry: Mapping[str, Any]) -> str:
    wasm = entry["wasm"]
    parts = [f"p50 {_figure(wasm['p50AddedUs'], 'µs')}", f"p99 {_figure(wasm['p99AddedUs'], 'µs')}",
             f"CPU {_figure(wasm['cpuAddedUsPerRequest'], 'µs/request')}",
             f"throughput {_figure(wasm['throughputRatio'], '', ratio=True)}"]
    vms = int(entry["variants"]["wasm"]["memory"].get("wasmVmsActive", 0) or 0)
    rss = int(wasm["rssAddedBytes"])
    parts.append(f"{rss / 1048576:+.1f} MiB RSS" + (f" ({vms} VMs)" if vms else ""))
    versus = entry.get("wasmVsNative")
    if versus:
        parts.append(f"Wasm/native throughput {_figure(versus['throughputRatio'], '', ratio=True)}")
    return ", ".join(parts)
