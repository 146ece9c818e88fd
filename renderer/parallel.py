"""Put the second core to work: map_chunks() for the per-service stages (reading the workloads, planning
and validating overlays, comparing files), which at mesh scale are most of a render; submit() for one job nothing
waits on at once (validating the binaries with wasmtime, whose import alone is ~50 ms). The design
target is a 2-core machine. Callers hand over a pure function and a list, never work of their own to
interleave: what each stage does stays in its module, and the order of everything else stays serial.

fork(2), not multiprocessing or a pool: the child starts with everything the parent has loaded and
computed (copy-on-write), nothing is imported, spawned or pickled on the way in, and only its results
travel back, pickled through a pipe. The child is an accelerator, never an authority: if it fails in any
way (an exception, a signal, a short payload), the parent computes its part itself, so results and
errors are exactly those of a serial run. Work functions must therefore be pure: no printing, no
writing, no state the parent would need afterwards.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

JOBS_ENV = "WASM_GITOPS_JOBS"  # 1 forces serial work (debugging, profiling); unset: use the cores
# Below this many items a fork (a few ms for a process of ~100 MB) costs more than sharing the work saves.
MIN_ITEMS = 64


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _single_threaded() -> bool:
    """fork() copies only the calling thread; a lock held by another thread stays held in the child
    forever. We only fork a process whose only thread is this one (wasm.py keeps wasmtime from
    starting its compiler threads for that reason); elsewhere we simply work serially."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def enabled(count: int) -> bool:
    if count < MIN_ITEMS:
        return False
    return _may_fork()


def _may_fork() -> bool:
    if not hasattr(os, "fork"):
        return False
    wanted = os.environ.get(JOBS_ENV, "").strip()
    if wanted and wanted != "auto":
        try:
            if int(wanted) < 2:
                return False
        except ValueError:
            return False
    return _cores() >= 2 and _single_threaded()


# The items go out in chunks through a queue both processes take from, so that neither waits for the
# other: the two vCPUs of a busy VM rarely run at the same speed. A chunk number is one byte, so a
# queue holds at most 255; chunks of at least 8 items keep the cost of taking one (a read, a call of
# work) small.
_MAX_CHUNKS = 255
_MIN_CHUNK = 8


def _chunks(count: int) -> list[tuple[int, int]]:
    n = max(2, min(_MAX_CHUNKS, count // _MIN_CHUNK))
    bounds = [count * i // n for i in range(n + 1)]
    return list(zip(bounds, bounds[1:], strict=False))


def _drain(work: Callable[[Sequence[T]], list[R]], items: Sequence[T], chunks: list[tuple[int, int]],
           queue: int, failed: dict[int, Exception] | None = None) -> dict[int, list[R]]:
    """Take chunks off the queue until it is empty. A pipe hands each byte to one reader only.

    With `failed`, a chunk whose work raises is recorded there and taking stops; without, it raises."""
    done: dict[int, list[R]] = {}
    while taken := os.read(queue, 1):
        start, stop = chunks[taken[0]]
        try:
            done[taken[0]] = work(items[start:stop])
        except Exception as e:
            if failed is None:
                raise
            failed[taken[0]] = e
            break
    return done


def map_chunks(work: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
    """work(items), computed by this process and a forked child together.

    Equal to work(items) for any work whose result for a sequence is the concatenation of its
    results for the parts (a map, or a filter): same items, same order, the same first error.
    """
    if not enabled(len(items)):
        return work(items)
    chunks = _chunks(len(items))
    try:
        queue, filler = os.pipe()
    except OSError:  # out of file descriptors: the work is still there to do, here
        return work(items)
    try:
        os.write(filler, bytes(range(len(chunks))))  # at most 255 bytes: one atomic write, never blocks
    finally:
        os.close(filler)  # once empty, the queue reads as its end
    failed: dict[int, Exception] = {}
    try:
        theirs = Pending(lambda: _drain(work, items, chunks, queue))
        try:
            mine = _drain(work, items, chunks, queue, failed)
        except BaseException:  # ^C: the child's chunks are no longer wanted
            theirs.cancel()
            raise
        done = {**mine, **theirs.result()}  # a failed child: result() finds the queue empty
    finally:
        os.close(queue)
    # In chunk order, as serial work would go: a chunk nobody delivered (the child failed, or the
    # parent stopped at an error) is computed here, and the first error in that order is raised.
    results: list[R] = []
    for number, (start, stop) in enumerate(chunks):
        if number in done:
            results.extend(done[number])
        elif number in failed:
            raise failed[number]
        else:
            results.extend(work(items[start:stop]))
    return results


class Pending(Generic[T]):
    """fn(), computed in a forked child while the caller goes on; result() collects it.

    Like map_chunks: the child is never trusted. If it cannot be started, or fails, result() computes
    fn() here. cancel() (or result()) must be called: it reaps the child."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._pid: int | None = None
        self._read_end = -1
        if not _may_fork():
            return
        try:
            self._read_end, write_end = os.pipe()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            os.close(self._read_end)
            os.close(write_end)
            return
        if pid == 0:
            status = 1
            try:
                os.close(self._read_end)
                payload = pickle.dumps(fn(), protocol=pickle.HIGHEST_PROTOCOL)
                with open(write_end, "wb") as pipe:
                    pipe.write(payload)
                status = 0
            except BaseException:  # any failure means "parent, do it yourself"
                pass
            finally:
                os._exit(status)
        os.close(write_end)
        self._pid = pid

    def result(self) -> T:
        if self._pid is None:
            return self._fn()
        pid, self._pid = self._pid, None
        try:
            with open(self._read_end, "rb") as pipe:
                payload = pipe.read()
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        _, status = os.waitpid(pid, 0)
        if status == 0 and payload:
            try:
                value: T = pickle.loads(payload)
                return value
            except Exception:  # a corrupt payload is treated like a failed child
                pass
        return self._fn()

    def cancel(self) -> None:
        if self._pid is not None:
            pid, self._pid = self._pid, None
            os.close(self._read_end)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def submit(fn: Callable[[], T]) -> Pending[T]:
    return Pending(fn)
