"""`wasm-gitops cost`: what a service's Wasm chain costs each request, measured in a real Envoy.

Per distinct chain, Envoys on 127.0.0.1 serve the same listener (renderer.envoy.istio's shape for the
service's context): with the rendered chain (`wasm`), with the chain minus its Wasm filters (`none`),
when the chain's only effect on a request is adding headers, with Envoy's own `header_mutation` adding
them instead (`native`), and `none` once more in an Envoy of its own (`control`). All proxy to one
upstream Envoy that answers directly. `wrk` drives each variant at a paced rate (latency) and at
saturation (throughput, and Envoy's CPU time per request), in interleaved rounds; a comparison is
reported only when its effect is larger than its spread over the rounds and than what the control
differs from `none` by. docs/cost.md says why each choice was made and how to read the result.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .envoy import istio
from .envoy.binary import EnvoyBinary
from .envoy.process import EnvoyFailed, EnvoyServer
from .errors import UsageError, WasmGitopsError
from .model import Context

SCHEMA_VERSION = 1
# control is none again, in an Envoy of its own: what the method measures between two identical
# listeners is the floor under every difference it reports.
VARIANTS = ("none", "wasm", "native", "control")
WASM_TYPE = istio.WASM_TYPE
HEADER_MUTATION = "envoy.filters.http.header_mutation"
HEADER_MUTATION_TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
PROBE_PATH = "/.wasm-gitops-cost-probe"
LOAD_PATH = "/"

# A run with fewer requests than this is refused: its p99 would be no percentile at all.
MIN_REQUESTS = 100
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
WRK_GRACE = 10.0  # seconds past -d before a wrk that does not finish is killed
_MARK = "WASM_GITOPS_WRK "


class MeasurementFailed(WasmGitopsError):
    """Envoy refused a chain, or requests through it failed: a finding about the chain (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Settings:
    rounds: int = 5  # interleaved rounds; each measures every variant at the paced rate and at saturation
    seconds: int = 1  # length of one wrk run (wrk counts whole seconds)
    rate: int = 1000  # paced rate, requests per second
    connections: int = 16  # connections at saturation
    starts: int = 3  # Envoy starts per variant, for the load/compile time

    def check(self) -> None:
        if self.rounds < 2:
            raise UsageError("--rounds must be at least 2: one round has no spread to compare effects with")
        if self.seconds < 1:
            raise UsageError("--seconds must be at least 1 (wrk counts whole seconds)")
        if not 10 <= self.rate <= 100_000:
            raise UsageError("--rate must be between 10 and 100000 requests per second")
        if not 1 <= self.connections <= 1000:
            raise UsageError("--connections must be between 1 and 1000")
        if self.starts < 1:
            raise UsageError("--starts must be at least 1")


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
    from . import core

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
    from .spec import load_spec

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


# ---------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class CpuSample:
    total: int  # clock ticks over all CPUs
    steal: int
    idle: int


def cpu_sample(stat: str | None = None) -> CpuSample:
    text = stat if stat is not None else Path("/proc/stat").read_text(encoding="ascii")
    fields = [int(x) for x in text.splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    fields += [0] * (10 - len(fields))
    return CpuSample(total=sum(fields[:8]), steal=fields[7], idle=fields[3] + fields[4])


def process_cpu_ns(pid: int) -> int:
    """CPU time all threads of a process have used, in ns. /proc/PID/schedstat is the main thread
    only (Envoy's workers are other threads), so the threads' exact runtimes are summed; without
    schedstat, the process's utime + stime in clock ticks."""
    total, found = 0, False
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text(encoding="ascii").split()[0])
                found = True
    if found:
        return total
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks * _TICK_NS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/{pid}/status has no VmRSS")


def machine(envoy: EnvoyBinary, wrk: Path) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpuModel": model,
        "kernel": platform.release(),
        "envoyVersion": envoy.version,
        "envoyConcurrency": 1,
        "loadGenerator": wrk_version(wrk),
    }


# ---------------------------------------------------------------------------- wrk

# wrk's Lua hooks: `delay` paces each connection (milliseconds between a response and the next
# request), `done` prints the run's figures as one JSON line after wrk's own summary. The latency
# histogram is wrk's, exact to the microsecond; percentile() reads it.
_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"durationUs":%d,"bytes":%d,"connectErrors":%d,"readErrors":%d,' ..
    '"writeErrors":%d,"statusErrors":%d,"timeouts":%d,"p50Us":%.1f,"p90Us":%.1f,"p99Us":%.1f,' ..
    '"minUs":%.1f,"maxUs":%.1f,"meanUs":%.3f}\\n',
    "MARK", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.min,
    latency.max, latency.mean))
end
""".replace("MARK", _MARK)

_WRK_PACED = """
local pause = 0
function init(args)
  pause = tonumber(args[1])
end
function delay()
  return pause
end
"""


def find_wrk(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    found = shutil.which("wrk", path=env.get("PATH"))
    if found is None:
        raise UsageError("wrk (the HTTP load generator) is not installed: apt-get install wrk")
    return Path(found)


def wrk_version(wrk: Path) -> str:
    done = subprocess.run([os.fspath(wrk), "-v"], capture_output=True, text=True, timeout=10, check=False,
                          stdin=subprocess.DEVNULL)
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


@dataclass(frozen=True)
class LoadRun:
    """One wrk run against one variant, with what the machine did meanwhile."""

    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    envoy_cpu_ns: int  # CPU time the measured Envoy used during the run
    steal_ticks: int
    total_ticks: int
    foreign_ns: int  # CPU time used meanwhile by processes other than wrk and the Envoys measured

    @property
    def foreign_share(self) -> float:
        """Of the machine's CPU time during the run, the share other processes took."""
        return self.foreign_ns / max(1, self.total_ticks * _TICK_NS)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.envoy_cpu_ns / 1000 / self.requests


def paced(rate: int) -> tuple[int, int]:
    """(connections, pause in ms) for a paced run near `rate` requests/s: wrk pauses in whole
    milliseconds, so each connection waits at least 2 ms and enough connections share the rate."""
    connections = max(1, math.ceil(rate / 500))
    return connections, max(1, round(connections * 1000 / rate))


def run_wrk(wrk: Path, port: int, envoy_pid: int, upstream_pid: int, settings: Settings, *, paced_run: bool,
            workdir: Path) -> LoadRun:
    script = workdir / ("paced.lua" if paced_run else "saturate.lua")
    if not script.exists():
        script.write_text((_WRK_PACED if paced_run else "") + _WRK_DONE, encoding="utf-8")
    if paced_run:
        connections, pause = paced(settings.rate)
    else:
        connections, pause = settings.connections, 0
    argv = [os.fspath(wrk), "-t1", f"-c{connections}", f"-d{settings.seconds}s", "--timeout", "5s",
            "-s", os.fspath(script), f"http://127.0.0.1:{port}{LOAD_PATH}"]
    if paced_run:
        argv += ["--", str(pause)]
    before_cpu, before = process_cpu_ns(envoy_pid), cpu_sample()
    before_up, before_wrk = process_cpu_ns(upstream_pid), _children_cpu_ns()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=settings.seconds + WRK_GRACE,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MeasurementFailed(f"wrk did not finish within {settings.seconds + WRK_GRACE:.0f} s") from None
    after_cpu, after = process_cpu_ns(envoy_pid), cpu_sample()
    # wrk is the only child that ends during the run, so the children's rusage grows by its CPU time.
    ours = (after_cpu - before_cpu) + (process_cpu_ns(upstream_pid) - before_up) + (_children_cpu_ns() - before_wrk)
    busy = (after.total - after.idle - after.steal) - (before.total - before.idle - before.steal)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise MeasurementFailed(f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
    figures = json.loads(line[len(_MARK):])
    errors = {k: figures[k] for k in ("connectErrors", "readErrors", "writeErrors", "statusErrors", "timeouts")
              if figures[k]}
    if errors:
        raise MeasurementFailed(f"requests failed under load: {errors} of {figures['requests']}")
    if figures["requests"] < MIN_REQUESTS:
        raise MeasurementFailed(f"only {figures['requests']} requests in {settings.seconds} s (fewer than "
                                f"{MIN_REQUESTS}: too few for a p99); raise --seconds or --rate")
    return LoadRun(requests=figures["requests"], seconds=figures["durationUs"] / 1e6, p50_us=figures["p50Us"],
                   p99_us=figures["p99Us"], envoy_cpu_ns=after_cpu - before_cpu,
                   steal_ticks=after.steal - before.steal, total_ticks=after.total - before.total,
                   foreign_ns=max(0, busy * _TICK_NS - ours))


def _children_cpu_ns() -> int:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Summary:
    """A figure over the rounds: median, interquartile range, and every run."""

    median: float
    spread: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), iqr(values), tuple(values))

    def as_json(self, digits: int = 1) -> dict[str, Any]:
        return {"median": round(self.median, digits), "spread": _number(self.spread, digits),
                "runs": [round(v, digits) for v in self.runs]}


def iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.inf
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


@dataclass(frozen=True)
class Comparison:
    """Variant a against variant b, round by round (the rounds are interleaved, so pairing the
    runs of one round cancels the machine's slow drifts). `effect` is the median of the per-round
    differences (or ratios), `spread` their interquartile range. `floor` is what the same figure
    comes to between two identical listeners in two Envoys (the control against none: |effect| +
    spread), the difference this method reports when there is none. `value` is set only when the
    effect is larger than both, and only when it is a cost: a chain is never reported as free or
    as making requests cheaper."""

    effect: float
    spread: float
    value: float | None
    reason: str  # why value is None (one of REASONS), else ""
    floor: float | None = None

    def as_json(self, digits: int = 1) -> dict[str, Any]:
        return {"value": _number(self.value, digits), "effect": _number(self.effect, digits),
                "spread": _number(self.spread, digits), "floor": _number(self.floor, digits),
                "resolved": self.value is not None, **({"reason": self.reason} if self.reason else {})}


def _number(value: float | None, digits: int) -> float | None:
    """JSON has no NaN or infinity: an undefined figure is null."""
    return None if value is None or not math.isfinite(value) else round(value, digits)


Pair = tuple[Sequence[float], Sequence[float]]


def compare_difference(a: Sequence[float], b: Sequence[float], control: Pair | None = None) -> Comparison:
    """What a costs over b, in b's unit: the median of the per-round differences a - b. `control`
    is (control, none) for the same figure: its own difference is the floor."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    effect = statistics.median(diffs)
    floor = None
    if control is not None:
        same = [x - y for x, y in zip(*control, strict=True)]
        floor = abs(statistics.median(same)) + iqr(same)
    return _judge(effect, iqr(diffs), effect, floor)


def compare_ratio(a: Sequence[float], b: Sequence[float], control: Pair | None = None) -> Comparison:
    """a/b per round, for throughput: the cost is the share lost, 1 - a/b; a ratio above 1 would be
    the chain making the proxy faster and is refused like a negative cost."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    median = statistics.median(ratios)
    floor = None
    if control is not None:
        same = [x / y for x, y in zip(*control, strict=True)]
        floor = abs(1.0 - statistics.median(same)) + iqr(same)
    return _judge(1.0 - median, iqr(ratios), median, floor)


# Why a comparison has no value, as the JSON says it (stable words) and the text explains it.
REASONS = {
    "noise": "the spread or the control's difference is not smaller than the effect",
    "negative": "measured as cheaper than what it is compared with: noise, not a figure",
    "unresolved": "needs both costs resolved",
}


def _judge(effect: float, spread: float, shown: float, floor: float | None = None) -> Comparison:
    bar = spread if floor is None else max(spread, floor)
    if not abs(effect) > bar:
        return Comparison(effect, spread, None, "noise", floor)
    if effect <= 0:
        return Comparison(effect, spread, None, "negative", floor)
    return Comparison(effect, spread, shown, "", floor)


def ratio_of_effects(a: Comparison, b: Comparison) -> Comparison:
    """How many times b's cost a's cost is (the Wasm chain against the native filter): defined only
    when both costs are resolved."""
    if a.value is None or b.value is None or b.effect <= 0:
        return Comparison(math.nan, math.nan, None, "unresolved")
    ratio = a.effect / b.effect
    return Comparison(ratio, math.nan, ratio, "")


# ---------------------------------------------------------------------------- Envoy configuration


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
    typed = http_filter.get("typed_config")
    return isinstance(typed, Mapping) and typed.get("@type") == WASM_TYPE


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


# ---------------------------------------------------------------------------- what a chain does


@dataclass(frozen=True)
class Seen:
    status: int
    request: tuple[tuple[str, str], ...]  # as the upstream received them
    response: tuple[tuple[str, str], ...]  # as the client received them


@dataclass(frozen=True)
class Effect:
    """What a chain did to the probe request, against the same listener without it."""

    request_added: tuple[tuple[str, str], ...] = ()
    response_added: tuple[tuple[str, str], ...] = ()
    other: tuple[str, ...] = ()  # anything header_mutation cannot reproduce by adding headers

    @property
    def headers_only(self) -> bool:
        return not self.other and bool(self.request_added or self.response_added)

    def describe(self) -> str:
        parts = [f"adds request header {k}: {v}" for k, v in self.request_added]
        parts += [f"adds response header {k}: {v}" for k, v in self.response_added]
        return "; ".join(parts + list(self.other)) or "no visible effect"


def probe(port: int) -> Seen:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", PROBE_PATH, headers={"Host": "cost.local", "User-Agent": "wasm-gitops-cost"})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        headers = tuple((k.lower(), v) for k, v in response.getheaders())
    finally:
        conn.close()
    request = tuple(tuple(line.split(": ", 1)) for line in body.splitlines() if ": " in line)
    return Seen(response.status, request, headers)  # type: ignore[arg-type]


# Envoy's own per-request values: the second-resolution date, the upstream's time in ms, the UUID
# request id. Probes of different Envoys, taken at different moments, differ in these alone.
_PER_REQUEST = frozenset({"date", "x-envoy-upstream-service-time", "x-request-id"})


def _volatile(a: Sequence[tuple[str, str]], b: Sequence[tuple[str, str]]) -> set[str]:
    """Headers whose values differ between two identical requests, and Envoy's per-request ones."""
    return {k for k, _ in set(a) ^ set(b)} | _PER_REQUEST


def effect_of(chain: Sequence[Seen], bare: Sequence[Seen]) -> Effect:
    """Compares two probes through the chain with two through the bare listener. Headers whose
    values change from one request to the next on either side are left out: they say nothing
    about the filter."""
    skip_req = _volatile(chain[0].request, chain[1].request) | _volatile(bare[0].request, bare[1].request)
    skip_resp = _volatile(chain[0].response, chain[1].response) | _volatile(bare[0].response, bare[1].response)
    # The probe's body is the echo of the request headers: its length follows what the chain added.
    skip_resp.add("content-length")

    def delta(with_: Sequence[tuple[str, str]], without: Sequence[tuple[str, str]],
              skip: set[str], side: str) -> tuple[tuple[tuple[str, str], ...], list[str]]:
        w = [h for h in with_ if h[0] not in skip]
        o = [h for h in without if h[0] not in skip]
        removed = [h for h in o if h not in w]
        added = [h for h in w if h not in o]
        other = [f"removes or changes {side} header {k}" for k, _ in removed]
        return tuple(added), other

    req_added, req_other = delta(chain[0].request, bare[0].request, skip_req, "request")
    resp_added, resp_other = delta(chain[0].response, bare[0].response, skip_resp, "response")
    other = req_other + resp_other
    if chain[0].status != bare[0].status:
        other.append(f"answers {chain[0].status} instead of {bare[0].status}")
    return Effect(req_added, resp_added, tuple(other))


# ---------------------------------------------------------------------------- measuring


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


def _wasm_stats(server: EnvoyServer) -> tuple[int, int]:
    active = created = 0
    for entry in server.admin_json("/stats?format=json&filter=^wasm\\.").get("stats", []):
        name = entry.get("name", "")
        if name.endswith(".active") and name.startswith("wasm.envoy.wasm.runtime."):
            active += int(entry["value"])
        elif name.endswith(".created") and name.startswith("wasm.envoy.wasm.runtime."):
            created += int(entry["value"])
    return active, created


def _start(envoy: EnvoyBinary, bootstrap: dict[str, Any], workdir: Path, *,
           concurrency: int = 1) -> tuple[EnvoyServer, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    # At info, Envoy logs when it starts loading the listeners and when it is done with them.
    server = EnvoyServer(envoy, bootstrap, workdir, concurrency=concurrency, log_level="info")
    began = time.monotonic()
    try:
        server.start()
    except EnvoyFailed as e:
        raise MeasurementFailed(f"Envoy refused the listener: {_last_lines(e.log)}") from None
    return server, (time.monotonic() - began) * 1000


_LOG_TIME = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]\[\d+\]\[info\]\[config\] \[[^\]]*\] "
_LISTENERS_BEGIN = re.compile(_LOG_TIME + r"loading \d+ listener\(s\)$", re.M)
_LISTENERS_END = re.compile(_LOG_TIME + r"loading stats configuration$", re.M)


def listener_load_ms(log: str) -> float | None:
    """How long Envoy took to build its listeners, by its own log: from "loading N listener(s)" to
    the next step, "loading stats configuration". Each Wasm filter's module is read, compiled and
    its first VM started (proxy_on_vm_start, proxy_on_configure) in between, on the main thread.
    None when the log does not have both lines."""
    begin, end = _LISTENERS_BEGIN.search(log), _LISTENERS_END.search(log)
    if begin is None or end is None:
        return None
    stamp = "%Y-%m-%d %H:%M:%S.%f"
    delta = datetime.strptime(end.group(1), stamp) - datetime.strptime(begin.group(1), stamp)
    return delta.total_seconds() * 1000


def _last_lines(log: str, n: int = 5) -> str:
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no log)"


def _single_port(server: EnvoyServer) -> int:
    ports = server.listener_ports()
    if len(ports) != 1:
        raise MeasurementFailed(f"expected one listener, Envoy has {sorted(ports)}")
    return next(iter(ports.values()))


def _native_for(chain: Chain, chains: dict[str, list[dict[str, Any]]], envoy: EnvoyBinary, upstream_port: int,
                workdir: Path, stack: contextlib.ExitStack) -> tuple[Effect, Effect | None]:
    """What the chain does to a probe request (against the bare listener), and the effect a native
    header_mutation reproduces exactly, or None. The native chain is added to `chains` only when
    Envoy, probed the same way, shows the very same effect."""
    servers = {}
    for name in ("none", "wasm"):
        server, _ = _start(envoy, bootstrap_for(chain, chains[name], upstream_port), workdir / f"{name}-probe")
        stack.callback(server.stop)
        servers[name] = server
    seen = {name: [probe(_single_port(s)) for _ in range(2)] for name, s in servers.items()}
    for name, s in servers.items():
        s.stop()
        if seen[name][0].status != 200:
            which = "with the chain" if name == "wasm" else "without the chain"
            raise MeasurementFailed(f"service {chain.service}: the listener {which} answers "
                                    f"{seen[name][0].status} to GET {PROBE_PATH}; cost measures requests that "
                                    "pass the chain")
    effect = effect_of(seen["wasm"], seen["none"])
    if not effect.headers_only:
        return effect, None
    candidate = with_native(chains["wasm"], effect)
    server, _ = _start(envoy, bootstrap_for(chain, candidate, upstream_port), workdir / "native-probe")
    stack.callback(server.stop)
    native_seen = [probe(_single_port(server)) for _ in range(2)]
    server.stop()
    if effect_of(native_seen, seen["none"]) != effect:
        return effect, None  # header_mutation does not reproduce it: no fair comparison
    chains["native"] = candidate
    return effect, effect


def measure_chain(chain: Chain, same_as: list[Chain], envoy: EnvoyBinary, wrk: Path, upstream_port: int,
                  upstream_pid: int, settings: Settings, workdir: Path,
                  progress: Callable[[str], None]) -> ChainResult:
    full = list(chain.http_filters)
    chains: dict[str, list[dict[str, Any]]] = {"none": without_wasm(full), "wasm": full}
    with contextlib.ExitStack() as stack:
        progress(f"{chain.service}: what the chain does")
        effect, native = _native_for(chain, chains, envoy, upstream_port, workdir, stack)
        chains["control"] = chains["none"]
        variants = [v for v in VARIANTS if v in chains]
        results = {name: VariantResult(name) for name in variants}

        # Each variant started `starts` times, interleaved, for the load/compile time; the last stays up.
        servers: dict[str, EnvoyServer] = {}
        for i in range(settings.starts):
            for name in variants:
                if name in servers:
                    servers[name].stop()
                server, ms = _start(envoy, bootstrap_for(chain, chains[name], upstream_port), workdir / f"{name}-{i}")
                stack.callback(server.stop)
                servers[name] = server
                results[name].ready_ms.append(ms)
                results[name].starts.append(server)
        ports = {name: _single_port(s) for name, s in servers.items()}
        pids = {name: s.pid for name, s in servers.items()}
        for name in variants:
            results[name].rss_ready[1] = rss_bytes(pids[name])
        # A second worker gets VMs of its own: one more start with two workers, with and without
        # the chain, says what each worker's VM adds (Istio runs as many workers as the pod's CPU limit).
        for name in ("none", "wasm"):
            server, _ = _start(envoy, bootstrap_for(chain, chains[name], upstream_port), workdir / f"{name}-2w",
                               concurrency=2)
            stack.callback(server.stop)
            results[name].rss_ready[2] = rss_bytes(server.pid)
            server.stop()

        def load(name: str, paced_run: bool) -> LoadRun:
            try:
                return run_wrk(wrk, ports[name], pids[name], upstream_pid, settings, paced_run=paced_run,
                               workdir=workdir)
            finally:
                # A filter that brings Envoy down shows as failed requests first; say what happened.
                if not servers[name].running:
                    raise MeasurementFailed(f"service {chain.service}: Envoy ({name}) exited during a load run: "
                                            f"{_last_lines(servers[name].log())}")

        # A warm-up run each (V8 tiers hot functions up, connections open), then the rounds, each in
        # a rotated order so that no variant always runs first or last.
        progress(f"{chain.service}: warming up")
        for name in variants:
            load(name, False)
        for r in range(settings.rounds):
            progress(f"{chain.service}: round {r + 1}/{settings.rounds}")
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for name in order:
                results[name].paced.append(load(name, True))
            for name in order:
                results[name].saturated.append(load(name, False))
        for name in variants:
            server = servers[name]
            results[name].rss = rss_bytes(pids[name])
            memory = server.admin_json("/memory")
            results[name].memory = {k: int(v) for k, v in memory.items() if str(v).isdigit()}
            results[name].wasm_vms_active, results[name].wasm_vms_created = _wasm_stats(server)
    for result in results.values():
        result.read_logs()
    return ChainResult(chain, same_as, native, effect, results)


# ---------------------------------------------------------------------------- the report


def _signature(chain: Chain) -> str:
    """Two services with equal chains are measured once. The chains come from one call of
    istio.filter_set_chains, which writes each module once per content: equal filenames are equal
    bytes, so comparing the configurations compares the modules too."""
    return json.dumps(list(chain.http_filters), sort_keys=True)


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


# ---------------------------------------------------------------------------- the command


def run(chains: Sequence[Chain], envoy: EnvoyBinary, settings: Settings, *, wrk: Path | None = None,
        progress: Callable[[str], None] | None = None, skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
    settings.check()
    wrk_path = wrk if wrk is not None else find_wrk()
    say: Callable[[str], None] = progress or (lambda _: None)
    groups: dict[str, list[Chain]] = {}
    for chain in chains:
        groups.setdefault(_signature(chain), []).append(chain)
    began, before = time.monotonic(), cpu_sample()
    results = []
    with tempfile.TemporaryDirectory(prefix="wasm-gitops-cost-") as tmp, _upstream(envoy, Path(tmp)) as (port, upstream_pid):
        for i, group in enumerate(groups.values()):
            results.append(measure_chain(group[0], group[1:], envoy, wrk_path, port, upstream_pid, settings, Path(tmp) / f"chain-{i}", say))
    return build_report(results, machine(envoy, wrk_path), settings, before, cpu_sample(),
                        time.monotonic() - began, skipped)


@contextlib.contextmanager
def _upstream(envoy: EnvoyBinary, tmp: Path) -> Iterator[tuple[int, int]]:
    server, _ = _start(envoy, upstream_bootstrap(), tmp / "upstream")
    try:
        yield _single_port(server), server.pid
    finally:
        server.stop()


def stderr_progress(message: str) -> None:
    if sys.stderr.isatty():
        print(f"cost: {message}", file=sys.stderr, flush=True)
