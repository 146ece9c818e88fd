"""What the machine and Envoy say about a run: /proc (CPU time, steal, resident memory), Envoy's log
and its Wasm statistics."""

from __future__ import annotations

import contextlib
import os
import re
import resource
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..envoy.process import EnvoyServer

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


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
    return ticks * TICK_NS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/{pid}/status has no VmRSS")


def children_cpu_ns() -> int:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


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


def wasm_stats(server: EnvoyServer) -> tuple[int, int]:
    active = created = 0
    for entry in server.admin_json("/stats?format=json&filter=^wasm\\.").get("stats", []):
        name = entry.get("name", "")
        if name.endswith(".active") and name.startswith("wasm.envoy.wasm.runtime."):
            active += int(entry["value"])
        elif name.endswith(".created") and name.startswith("wasm.envoy.wasm.runtime."):
            created += int(entry["value"])
    return active, created
