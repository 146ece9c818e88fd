"""The forked second worker (renderer/parallel.py): same results as serial work, and never trusted.

Where the forks happen in a render (reading the workloads, building and validating overlays, comparing
files) is covered end to end: a mesh above the fork threshold renders byte for byte the same tree with
and without it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import REPO, Repo, make_repo

from renderer import parallel

# The map_chunks cases run in a fresh interpreter: parallel.py never forks a process that runs threads,
# and by the time this file runs, earlier tests have started some in this one (wasmtime's compiler
# pool, for one). Each case is a function of this file, run as `python tests/test_parallel.py CASE`.

def _isolated(case: str, env: dict[str, str] | None = None) -> None:
    if parallel._cores() < 2:
        pytest.skip("one usable core: parallel.map_chunks works serially here")
    proc = subprocess.run([sys.executable, __file__, case], capture_output=True, text=True, timeout=120,
                          env={**os.environ, parallel.JOBS_ENV: "auto", **(env or {})}, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{case} ok"


def squares(part: Sequence[int]) -> list[int]:
    return [n * n for n in part]


def case_map_chunks_equals_the_serial_result_and_order() -> None:
    items = list(range(parallel.MIN_ITEMS * 3 + 1))  # odd: the halves differ in length
    assert parallel.map_chunks(squares, items) == squares(items)


def case_both_processes_take_chunks_and_the_order_holds() -> None:
    parent = os.getpid()
    items = list(range(parallel.MIN_ITEMS * 2))

    def work(part: Sequence[int]) -> list[tuple[int, int]]:
        time.sleep(0.001 * len(part))  # long enough that the child, a fork away, gets its share
        return [(n, os.getpid()) for n in part]

    done = parallel.map_chunks(work, items)
    assert [n for n, _ in done] == items
    assert len({pid for _, pid in done}) == 2 and parent in {pid for _, pid in done}


def case_the_first_error_in_item_order_is_raised_whichever_process_met_it() -> None:
    items = list(range(parallel.MIN_ITEMS * 4))
    first, later = items[len(items) // 3], items[-3]

    def work(part: Sequence[int]) -> list[int]:
        time.sleep(0.001 * len(part))  # slow enough that both processes take chunks
        for n in part:
            if n in (first, later):
                raise ValueError(f"bad item {n}")
        return squares(part)

    try:
        parallel.map_chunks(work, items)
    except ValueError as e:
        assert str(e) == f"bad item {first}", e
    else:
        raise AssertionError("no error raised")


def case_a_child_that_fails_or_is_killed_is_replaced_by_the_parent() -> None:
    parent = os.getpid()
    items = list(range(parallel.MIN_ITEMS * 2))
    for failure in ("raises", "is killed"):
        marker = f"/tmp/wasm-gitops-parallel-{parent}"

        def work(part: Sequence[int], failure: str = failure, marker: str = marker) -> list[int]:
            if os.getpid() != parent:
                open(marker, "w").close()  # noqa: SIM115 - proof that the child took a chunk
                if failure == "raises":
                    raise RuntimeError("the child breaks")
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001 * len(part))  # slow enough that the child, a fork away, gets a chunk
            return squares(part)

        assert parallel.map_chunks(work, items) == squares(items), failure
        assert os.path.exists(marker), f"the child never took a chunk (when it {failure})"
        os.unlink(marker)


def case_an_error_in_the_parents_half_propagates_and_leaves_no_child() -> None:
    parent = os.getpid()

    def work(part: Sequence[int]) -> list[int]:
        if os.getpid() == parent:
            raise ValueError("bad item")
        return squares(part)

    try:
        parallel.map_chunks(work, list(range(parallel.MIN_ITEMS * 2)))
    except ValueError as e:
        assert str(e) == "bad item"
    else:
        raise AssertionError("the parent's error was swallowed")
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass  # reaped: nothing left to wait for
    else:
        raise AssertionError("a child was left behind")


def case_serial_below_the_threshold_when_asked_and_when_threaded() -> None:
    parent = os.getpid()
    where = lambda part: [os.getpid() for _ in part]  # noqa: E731
    assert parallel.enabled(parallel.MIN_ITEMS)  # the cases above did fork
    assert set(parallel.map_chunks(where, list(range(parallel.MIN_ITEMS - 1)))) == {parent}
    os.environ[parallel.JOBS_ENV] = "1"
    assert set(parallel.map_chunks(where, list(range(parallel.MIN_ITEMS * 2)))) == {parent}
    os.environ[parallel.JOBS_ENV] = "auto"
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:  # fork would copy only this thread: a threaded process never forks
        assert not parallel._single_threaded()
        assert set(parallel.map_chunks(where, list(range(parallel.MIN_ITEMS * 2)))) == {parent}
    finally:
        stop.set()
        thread.join()


def case_no_file_descriptor_for_the_pipe_means_serial_work() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        while True:  # take every descriptor left but one, so that pipe() fails for real (EMFILE)
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        os.close(held.pop())
        assert parallel._single_threaded()  # the one left lets this look; the pipe needs two
        try:
            os.close(os.pipe()[0])
        except OSError:
            pass
        else:
            raise AssertionError("pipe() should have failed")
        parent = os.getpid()
        pids = parallel.map_chunks(lambda part: [os.getpid() for _ in part], list(range(parallel.MIN_ITEMS * 2)))
        assert set(pids) == {parent}
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def case_a_refused_fork_means_serial_work() -> None:
    # The kernel refuses fork() past RLIMIT_NPROC or the cgroup's pids.max, but never for root, who
    # runs these tests: the refusal is stood in for with the error the kernel gives.
    asked = []

    def refused() -> int:
        asked.append(1)
        raise BlockingIOError(11, "Resource temporarily unavailable")

    os.fork = refused
    items = list(range(parallel.MIN_ITEMS * 2))
    descriptors = len(os.listdir("/proc/self/fd"))
    assert parallel.map_chunks(squares, items) == squares(items)
    assert asked == [1]  # a fork was asked for, and refused
    assert len(os.listdir("/proc/self/fd")) == descriptors  # the pipes were closed again


def case_submit_computes_in_a_child_and_falls_back_here() -> None:
    parent = os.getpid()
    pending = parallel.submit(lambda: ("pid", os.getpid()))
    assert pending.result()[1] != parent
    failing = parallel.submit(lambda: (_ for _ in ()).throw(RuntimeError("boom")) if os.getpid() != parent
                              else ("pid", os.getpid()))
    assert failing.result() == ("pid", parent)  # the child failed: computed here instead
    slow = parallel.submit(lambda: time.sleep(60))
    slow.cancel()  # killed and reaped at once
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
    else:
        raise AssertionError("a child was left behind")
    os.environ[parallel.JOBS_ENV] = "1"
    assert parallel.submit(lambda: os.getpid()).result() == parent


CASES = [name for name in dict(globals()) if name.startswith("case_")]


@pytest.mark.parametrize("case", CASES)
def test_map_chunks(case: str) -> None:
    _isolated(case)


def test_a_check_keeps_wasmtime_out_of_its_own_process() -> None:
    # Validating the binaries is the helper's job: wasmtime's import (~50 ms) is not on the check's path.
    if parallel._cores() < 2:
        pytest.skip("one usable core: parallel.map_chunks works serially here")
    code = ("import sys; from pathlib import Path; from renderer.commands.check import check; "
            f"r = check(Path({str(REPO / 'filters.yaml')!r})); "
            "print(r.clean, 'wasmtime' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, parallel.JOBS_ENV: "auto"}, check=False)
    assert proc.stdout.split() == ["True", "False"], proc.stdout + proc.stderr


def _mesh(root: Path, services: int) -> Repo:
    repo = make_repo(root)
    entries = []
    for i in range(services):
        name = f"svc-{i:03d}"
        repo.app(name, f"{name}-v1", name, namespace=f"ns-{i % 3}")
        filters = "[example-filter, other-filter]" if i % 2 else "[other-filter]"
        entries.append(f"  - name: {name}\n    namespace: ns-{i % 3}\n    deployment: {name}-v1\n"
                       f"    resources: [apps/{name}]\n    filters: {filters}\n")
    spec = repo.spec.read_text(encoding="utf-8")
    repo.write("filters.yaml", spec[: spec.index("services:")] + "services:\n" + "".join(entries))
    return repo


def _render(repo: Repo, jobs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "renderer", "render", "-f", str(repo.spec)],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, parallel.JOBS_ENV: jobs})


def test_a_mesh_renders_the_same_tree_with_and_without_the_second_worker(tmp_path: Path) -> None:
    if parallel._cores() < 2:
        pytest.skip("one usable core: parallel.map_chunks works serially here")
    trees = {}
    for jobs in ("1", "auto"):
        repo = _mesh(tmp_path / f"jobs-{jobs}", parallel.MIN_ITEMS * 2 + 1)
        proc = _render(repo, jobs)
        assert proc.returncode == 0, proc.stderr
        trees[jobs] = repo.outputs()
    assert len(trees["1"]) > parallel.MIN_ITEMS * 6
    assert trees["1"] == trees["auto"]


def test_problems_found_by_the_child_are_reported_like_the_parents(tmp_path: Path) -> None:
    if parallel._cores() < 2:
        pytest.skip("one usable core: parallel.map_chunks works serially here")
    outputs = {}
    for jobs in ("1", "auto"):
        repo = _mesh(tmp_path / f"jobs-{jobs}", parallel.MIN_ITEMS * 2)
        # A broken workload early and late in the list: one is read by each process, and the findings keep
        # their order and count.
        for name in ("svc-001", f"svc-{parallel.MIN_ITEMS * 2 - 2:03d}"):
            repo.write(f"apps/{name}/deployment.yaml", "kind: Deployment\nmetadata: {name: [unclosed\n")
        proc = _render(repo, jobs)
        assert proc.returncode == 2, proc.stderr
        assert not (repo.root / "base").exists()
        outputs[jobs] = proc.stderr.replace(str(repo.root), "<repo>")
    assert outputs["1"] == outputs["auto"]
    assert outputs["1"].count("YAML syntax error") == 2


if __name__ == "__main__":  # a case in a fresh interpreter (see _isolated)
    globals()[sys.argv[1]]()
    print(f"{sys.argv[1]} ok")
