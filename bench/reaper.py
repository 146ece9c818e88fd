"""Spawn one command, wait4 for it, and write its wall time, CPU time and peak RSS to a file.

    python -S -I reaper.py RESULT_FILE CMD [ARG...]

Why a separate, tiny process: Linux folds the old address space's high-water mark into a process's
maxrss when it execs (exec_mmap -> setmax_mm_hiwater_rss). A child spawned by the benchmark itself
(fork or vfork) therefore reports at least the benchmark's own peak RSS, which grows as it generates
meshes and reads outputs: `true` reported 109 MB after its parent had touched 100 MB. Spawned from this
process instead, the floor is this interpreter's few MB (recorded as `floor_kib`), and the same for every
command and size. Keep imports to builtins: each one raises that floor.
"""

import os
import resource
import sys
import time


def _own_hiwater_kib() -> int:
    """This address space's peak: what a child spawned from it inherits. Not getrusage(RUSAGE_SELF),
    which also holds the high-water mark this process itself inherited from the benchmark."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # an upper bound, without /proc


def main() -> int:
    result_file, cmd = sys.argv[1], sys.argv[2:]
    floor = _own_hiwater_kib()  # before the spawn: the child inherits it at its exec
    start = time.perf_counter()
    # posix_spawnp: no Python code runs in the child between fork and exec.
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    with open(result_file, "w", encoding="ascii") as fh:
        fh.write(f"{seconds!r} {usage.ru_utime + usage.ru_stime!r} {usage.ru_maxrss} {code} {floor}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
