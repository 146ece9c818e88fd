"""`wasm-gitops render`: write the tree (atomically: a killed render leaves the old tree or the new one)."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import core
from ..envoy.load import EnvoyStep
from ..errors import Finding, OutputError
from ..output import Changes, compare, locked, recover, survey, write
from ..safepath import Inputs, OutputTree


@dataclass(frozen=True)
class RenderResult:
    changes: Changes
    warnings: tuple[Finding, ...]
    recovered: bool


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
           fault: Callable[[str], None] | None = None, envoy: EnvoyStep = core.ENVOY) -> RenderResult:
    fault = fault or fault_from_env(os.environ.get("WASM_GITOPS_KILL_AT"))
    prepared = core.prepare(spec_path, out, envoy=envoy)
    out_dir = prepared.out
    with core.output_errors(out_dir):
        return _render(prepared, fault)


def _render(prepared: core.Prepared, fault: Callable[[str], None] | None) -> RenderResult:
    out_dir = prepared.out
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is not a directory; choose another --out")
    core.guard_out(prepared)
    tree = OutputTree(out_dir)
    inputs = Inputs(prepared.spec.filter_set)
    guard: Callable[[], None] | None = None
    if out_dir.is_dir():
        # The per-directory guard runs before the comparison, so before anything is written.
        guard = functools.partial(core.guard_paths, prepared, tree)
    else:
        core.guard_paths(prepared, tree)  # before the mkdir: a refused --out gets nothing, not even a directory
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
        if guard is not None:
            guard()
        changes = compare(prepared.plan, tree, inputs)
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


