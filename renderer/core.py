"""The commands' logic, without click: spec -> model -> plan -> compare -> write. Returns data."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Finding, OutputError, RenderBug, UsageError
from .files import is_within
from .output import (
    Changes,
    check_paths,
    compare,
    locked,
    recover,
    survey,
    write,
)
from .output_validation import warm_up
from .plan import Plan, build_plan
from .safepath import Inputs, OutputTree
from .spec import LoadedSpec, load_spec


@dataclass(frozen=True)
class Prepared:
    spec: LoadedSpec
    plan: Plan
    out: Path

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return self.spec.warnings


@dataclass(frozen=True)
class RenderResult:
    changes: Changes
    warnings: tuple[Finding, ...]
    recovered: bool


@dataclass(frozen=True)
class CheckResult:
    changes: Changes
    warnings: tuple[Finding, ...]
    interrupted: bool  # a render was killed after its commit point and is not finished

    @property
    def clean(self) -> bool:
        return not self.interrupted and not self.changes.drift and not self.changes.hand_edited


def validate(spec_path: Path) -> LoadedSpec:
    return load_spec(spec_path)


def prepare(spec_path: Path, out: Path | None, *, keep_objects: bool = False) -> Prepared:
    out_dir = (out if out is not None else spec_path.parent)
    loaded = load_spec(spec_path, meanwhile=warm_up, out=out_dir)
    plan = build_plan(loaded.filter_set, out_dir, keep_objects=keep_objects)
    if plan.problems:
        raise RenderBug("wasm-gitops rendered objects that fail validation (a bug in wasm-gitops, please "
                        "report it):\n" + "\n".join(str(p) for p in plan.problems))
    return Prepared(loaded, plan, out_dir)


def _guard_out(prepared: Prepared) -> None:
    out = prepared.out
    root = prepared.spec.filter_set.root
    if out.is_symlink() and not is_within(os.path.realpath(root), os.path.realpath(out)):
        # An explicit --out elsewhere is the user's choice; a link that silently leads there is not.
        raise OutputError(f"{out}: is a symlink to {os.path.realpath(out)}, outside the repository of "
                          f"{prepared.spec.filter_set.spec_path.name}; pass the real directory as --out")


def _guard_paths(prepared: Prepared, tree: OutputTree) -> None:
    check_paths(prepared.plan, tree, prepared.spec.filter_set.spec_path)


@contextmanager
def _output_errors(out: Path) -> Iterator[None]:
    """Whatever the output tree does (a permission, a full disk, a vanished directory) is an
    OutputError naming the path, not a traceback."""
    try:
        yield
    except OSError as e:
        where = e.filename if e.filename else out
        raise OutputError(f"{where}: {e.strerror or e}; fix it (permissions, space, a path in the way), "
                          "then run again") from None


def fault_from_env(spec: str | None) -> Callable[[str], None] | None:
    """WASM_GITOPS_KILL_AT=STEP:N kills this process at the N-th STEP of a write (stage, commit,
    apply): the reliability tests use it to prove a SIGKILL at any point leaves the old or new tree."""
    if not spec:
        return None
    step, _, nth = spec.partition(":")
    count = {"n": 0}
    target = int(nth or "1")

    def fault(at: str) -> None:
        if at == step:
            count["n"] += 1
            if count["n"] == target:
                os.kill(os.getpid(), signal.SIGKILL)

    return fault


def render(spec_path: Path, out: Path | None = None,
           fault: Callable[[str], None] | None = None) -> RenderResult:
    fault = fault or fault_from_env(os.environ.get("WASM_GITOPS_KILL_AT"))
    prepared = prepare(spec_path, out)
    out_dir = prepared.out
    with _output_errors(out_dir):
        return _render(prepared, fault)


def _render(prepared: Prepared, fault: Callable[[str], None] | None) -> RenderResult:
    out_dir = prepared.out
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is not a directory; choose another --out")
    _guard_out(prepared)
    tree = OutputTree(out_dir)
    inputs = Inputs(prepared.spec.filter_set)
    guard: Callable[[], None] | None = None
    if out_dir.is_dir():
        # The per-directory guard runs while the helper starts comparing; it ends before compare()
        # returns, so before anything is written.
        guard = functools.partial(_guard_paths, prepared, tree)
    else:
        _guard_paths(prepared, tree)  # before the mkdir: a refused --out gets nothing, not even a directory
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{e.filename or out_dir}: cannot create the output directory "
                              f"({e.strerror}); choose another --out or fix the permissions") from None
        tree = OutputTree(out_dir)  # now it exists, its real path is known
    with locked(out_dir, exclusive=True):
        staging = survey(tree, inputs)
        if guard is not None and staging.committed:
            guard()  # finishing an interrupted render writes: the guard comes first
            guard = None
        recovered = recover(tree, inputs, staging)
        changes = compare(prepared.plan, tree, inputs, first=guard)
        _refuse_losses(out_dir, changes)
        write(prepared.plan, tree, changes, fault)
    return RenderResult(changes, prepared.warnings + tuple(changes.disowned), recovered)


def _refuse_losses(out: Path, changes: Changes) -> None:
    lines = [f"{out / rel}: exists and was not written by wasm-gitops; move it away or rename it (it is "
             "never overwritten)" for rel in changes.clashes]
    lines += [f"{out / rel}: was generated, then edited by hand, and is no longer produced; keep your "
              "edits elsewhere and delete it, then render again" for rel in changes.removed
              if rel in changes.hand_edited]
    if lines:
        raise OutputError("\n".join(lines))


def check(spec_path: Path, out: Path | None = None) -> CheckResult:
    return _check(prepare(spec_path, out))


def _check(prepared: Prepared, *, keep_current: bool = False) -> CheckResult:
    out_dir = prepared.out
    if not out_dir.is_dir():
        return CheckResult(Changes(added=sorted(prepared.plan.files)), prepared.warnings, False)
    with _output_errors(out_dir):
        _guard_out(prepared)  # before the lock: never lock a directory a stray link leads to
        tree = OutputTree(out_dir)
        inputs = Inputs(prepared.spec.filter_set)
        with locked(out_dir, exclusive=False):
            # The staging area is judged as render would judge it: one it would refuse is refused.
            interrupted = survey(tree, inputs).committed
            # The per-directory guard runs while the helper starts comparing: check writes nothing, so
            # reading a file through a link before the guard refuses it does no harm.
            changes = compare(prepared.plan, tree, inputs, keep_current=keep_current,
                              first=functools.partial(_guard_paths, prepared, tree))
    return CheckResult(changes, prepared.warnings + tuple(changes.disowned), interrupted)


# ------------------------------------------------------------------------------------------ verify

def verify(spec_path: Path, names: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Run the declared tests of each filter (or of those named) in the embedded proxy-wasm host."""
    from . import (
        verify as host,  # wasmtime's import is costly: only the verify command pays it
    )

    fs = load_spec(spec_path).filter_set
    known = {f.name for f in fs.filters}
    unknown = sorted(set(names) - known)
    if unknown:
        raise UsageError(f"no filter named {', '.join(unknown)} in {spec_path}")
    results: list[tuple[str, Any]] = []
    for f in fs.filters:
        if (names and f.name not in names) or not f.tests:
            continue
        if f.binary.is_oci:
            raise UsageError(f"filter {f.name!r} is an OCI image; verify runs local .wasm files only")
        for t in f.tests:
            # A test may carry its own plugin configuration, so each runs as its own plugin (the host
            # compiles a module once and caches it by sha256).
            config = t.config if t.config is not None else f.config
            target = host.FilterUnderTest(name=f.name, wasm=f.binary.data, root_id=f.root_id, vm_id=f.vm_id,
                                          plugin_config=(config or "").encode("utf-8"))
            case = host.VerifyCase(t.name, _message(t.request), _message(t.response), _expectation(t.expect))
            results.append((f.name, host.run_case(target, case)))
    return results


def _message(m: Any) -> Any:
    from .verify import HttpMessage

    return HttpMessage(headers=m.headers, body=m.body.encode("utf-8") if m.body is not None else None,
                       trailers=m.trailers)


def _expectation(raw: dict[str, Any]) -> Any:
    from .verify import Expectation, ExpectedLocalReply

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        return tuple((str(k), str(v)) for k, v in (raw.get(key) or {}).items())

    def text(key: str) -> bytes | None:
        return raw[key].encode("utf-8") if key in raw else None

    reply = raw.get("localReply")
    return Expectation(
        request_headers=pairs("requestHeaders"),
        response_headers=pairs("responseHeaders"),
        absent_request_headers=tuple(raw.get("absentRequestHeaders", ())),
        absent_response_headers=tuple(raw.get("absentResponseHeaders", ())),
        local_reply=ExpectedLocalReply(reply["status"], reply["body"].encode("utf-8") if "body" in reply else None)
        if reply else None,
        paused=raw.get("paused", "none"),
        logs=tuple(raw.get("logs", ())),
        request_body=text("requestBody"),
        response_body=text("responseBody"),
    )
