"""The load generator: wrk, paced or saturating, bounded in time, its figures read from a Lua `done()`
hook; and the statement of the machine every report carries."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..envoy.binary import EnvoyBinary
from ..errors import UsageError, WasmGitopsError
from .readings import TICK_NS, children_cpu_ns, cpu_sample, process_cpu_ns

# A run with fewer requests than this is refused: its p99 would be no percentile at all.
MIN_REQUESTS = 100
WRK_GRACE = 10.0  # seconds past -d before a wrk that does not finish is killed
_MARK = "WASM_GITOPS_WRK "
LOAD_PATH = "/"


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
        return self.foreign_ns / max(1, self.total_ticks * TICK_NS)

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
    before_up, before_wrk = process_cpu_ns(upstream_pid), children_cpu_ns()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=settings.seconds + WRK_GRACE,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MeasurementFailed(f"wrk did not finish within {settings.seconds + WRK_GRACE:.0f} s") from None
    after_cpu, after = process_cpu_ns(envoy_pid), cpu_sample()
    # wrk is the only child that ends during the run, so the children's rusage grows by its CPU time.
    ours = (after_cpu - before_cpu) + (process_cpu_ns(upstream_pid) - before_up) + (children_cpu_ns() - before_wrk)
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
                   foreign_ns=max(0, busy * TICK_NS - ours))
