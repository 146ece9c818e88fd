"""Run one command as a child process and measure its wall time, CPU time and peak resident memory.

Peak memory is the child's ru_maxrss from os.wait4, read by bench/reaper.py, a small interpreter that
spawns the command and reaps it. wait4 gives that one child's rusage: exact per child, nothing to
install. getrusage(RUSAGE_CHILDREN) deltas cannot give it (its ru_maxrss is the maximum over every child
ever reaped, so after one big child it never moves again), and wait4 straight from the benchmark would
not either: a child inherits the high-water mark of the process it was spawned from (see reaper.py).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REAPER = Path(__file__).resolve().parent / "reaper.py"


class MeasureError(Exception):
    """The reaper could not run the command at all (not found, not executable)."""


@dataclass(frozen=True)
class Sample:
    seconds: float
    cpu_seconds: float  # user + system: less disturbed than wall time when the machine is busy
    peak_kib: int
    floor_kib: int  # the reaper's own peak: a child's peak_kib is never reported below it
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def _sink(path: Path | None) -> IO[bytes]:
    return open(path, "wb") if path else tempfile.TemporaryFile()


def measure(cmd: list[str], cwd: Path, stdout_path: Path | None = None,
            env: dict[str, str] | None = None) -> Sample:
    """Run cmd to completion in cwd. Output goes to files, not pipes, so no one blocks on a full pipe;
    stdout_path keeps stdout there (kustomize writes tens of MB) instead of reading it back."""
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(tempfile.TemporaryFile())
        out = stack.enter_context(_sink(stdout_path))
        result = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "result"
        # -S -I: no site-packages, no environment: the reaper stays a few MB (its RSS is the floor).
        reaper = [sys.executable, "-S", "-I", str(REAPER), str(result), *cmd]
        rc = subprocess.run(reaper, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            env=env, check=False).returncode
        err.seek(0)
        stderr = err.read()
        if rc != 0 or not result.exists():
            why = stderr.decode("utf-8", "replace").strip().splitlines() or [f"reaper exited {rc}"]
            raise MeasureError(f"{' '.join(cmd)}: could not run it: {why[-1]}")
        seconds, cpu, peak, code, floor = result.read_text(encoding="ascii").split()
        stdout = b""
        if not stdout_path:
            out.seek(0)
            stdout = out.read()
        return Sample(float(seconds), float(cpu), int(peak), int(floor), int(code), stdout, stderr)
