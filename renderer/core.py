"""The commands' logic, without click: spec -> model -> plan -> compare -> write. Returns data."""

from __future__ import annotations

import functools
import hashlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Finding, OutputError, RenderBug, UsageError
from .files import is_within
from .model import OutputKind
from .output import (
    Changes,
    check_paths,
    compare,
    locked,
    pending_commit,
    recover,
    write,
)
from .output_validation import warm_up
from .plan import Plan, build_plan
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
    loaded = load_spec(spec_path, meanwhile=warm_up)
    out_dir = (out if out is not None else spec_path.parent)
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


def _guard_paths(prepared: Prepared) -> None:
    check_paths(prepared.plan, prepared.out, [prepared.spec.filter_set.spec_path])


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
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is not a directory; choose another --out")
    _guard_out(prepared)
    guard: Callable[[], None] | None = None
    if out_dir.is_dir():
        # The per-file guard runs while the helper starts comparing; it ends before compare()
        # returns, so before anything is written.
        guard = functools.partial(_guard_paths, prepared)
    else:
        _guard_paths(prepared)  # before the mkdir: a refused --out gets nothing, not even a directory
        out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir, exclusive=True):
        if guard is not None and pending_commit(out_dir):
            guard()  # finishing an interrupted render writes: the guard comes first
            guard = None
        recovered = recover(out_dir)
        changes = compare(prepared.plan, out_dir, first=guard)
        _refuse_losses(out_dir, changes)
        write(prepared.plan, out_dir, changes, fault)
    return RenderResult(changes, prepared.warnings, recovered)


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
    _guard_out(prepared)  # before the lock: never lock a directory a stray link leads to
    with locked(out_dir, exclusive=False):
        interrupted = pending_commit(out_dir)
        # The per-file symlink guard runs while the helper starts comparing: check writes nothing, so
        # reading a file through a link before the guard refuses it does no harm.
        changes = compare(prepared.plan, out_dir, keep_current=keep_current,
                          first=functools.partial(_guard_paths, prepared))
    return CheckResult(changes, prepared.warnings, interrupted)


# ------------------------------------------------------------------------------------------ diff

_LONG = 400  # a line longer than this (base64 of a binary) is summarised, not printed


def _display_lines(data: bytes) -> list[str]:
    out = []
    for line in data.decode("utf-8", "replace").splitlines(keepends=True):
        if len(line) > _LONG:
            head = line[: line.find(":") + 1] if ":" in line[:120] else ""
            digest = hashlib.sha256(line.strip().encode()).hexdigest()[:12]
            line = f"{head} <{len(line.strip()):,} characters, sha256 {digest}...>\n"
        out.append(line)
    return out


def unified_diff(spec_path: Path, out: Path | None = None) -> tuple[str, CheckResult]:
    from difflib import unified_diff as unified  # only diff needs it: not imported by every command

    prepared = prepare(spec_path, out)
    result = _check(prepared, keep_current=True)
    prepared_plan = prepared.plan
    chunks: list[str] = []
    ch = result.changes
    for rel in sorted(ch.added + ch.changed + ch.removed):
        old = ch.current.get(rel, b"")
        new = prepared_plan.files.get(rel, b"")
        a = f"a/{rel}" if rel not in ch.added else "/dev/null"
        b = f"b/{rel}" if rel not in ch.removed else "/dev/null"
        chunks.extend(unified(_display_lines(old), _display_lines(new), a, b))
    return "".join(chunks), result


# ------------------------------------------------------------------------------------------ verify

def verify(spec_path: Path, names: tuple[str, ...] = (), *, envoy: Path | None = None,
           progress: Callable[[int, int, Any], None] | None = None) -> list[Any]:
    """Run the declared tests of each filter and service (or of those named) in a real Envoy: a
    filter's tests through that filter alone, a service's through its whole rendered chain."""
    import tempfile

    from . import verify as runner
    from .envoy import istio
    from .envoy.binary import find_envoy

    prepared = prepare(spec_path, None, keep_objects=True)
    fs = prepared.spec.filter_set
    known = {f.name for f in fs.filters} | {s.name for s in fs.services}
    unknown = sorted(set(names) - known)
    if unknown:
        raise UsageError(f"no filter or service named {', '.join(unknown)} in {spec_path}")
    filters = [f for f in fs.filters if f.tests and (not names or f.name in names)]
    services = [s for s in fs.services if s.tests and (not names or s.name in names)]
    for f in filters:
        if f.binary.is_oci:
            raise UsageError(f"filter {f.name!r} is an OCI image; verify runs local .wasm files only")
    if not filters and not services:
        return []
    binary = find_envoy(envoy)
    listeners: dict[str, runner.Listener] = {}
    cases: list[runner.Case] = []
    with tempfile.TemporaryDirectory(prefix="wasm-gitops-modules-") as tmp:
        modules = Path(tmp)
        for f in filters:
            # The filter as the first service that loads it renders it (EnvoyFilter or WasmPlugin).
            output: OutputKind = next((s.output for s in fs.services for sf in s.filters
                                       if sf.filter.name == f.name), "EnvoyFilter")
            by_config: dict[str | None, str] = {}
            for t in f.tests:
                config = t.config if t.config is not None else f.config
                if config not in by_config:
                    name = by_config[config] = f"filter:{f.name}:{len(by_config)}"
                    http_filter = istio.http_filter(fs, f, config, modules, output=output)
                    listeners[name] = runner.Listener(name, "SIDECAR_INBOUND", (http_filter,), f"{f.name}.test")
                cases.append(runner.Case(f.name, "filter", by_config[config], t, "trace"))
        problems: dict[str, str] = {}
        chains = istio.filter_set_chains(fs, prepared.plan.objects, modules, only={s.name for s in services},
                                         on_error=lambda name, e: problems.__setitem__(name, str(e)))
        by_service = {c.service: c for c in chains}
        for s in services:
            name = f"service:{s.name}"
            host = f"{s.name}.{s.namespace}.svc.cluster.local"
            chain = by_service.get(s.name)
            listeners[name] = runner.Listener(name, s.context, tuple(f.http_filter for f in chain.filters)
                                              if chain else (), host, problems.get(s.name))
            level = dict(s.proxy_log_level).get("wasm", runner.ISTIO_DEFAULT_WASM_LEVEL)
            cases += [runner.Case(s.name, "service", name, t, level) for t in s.tests]
        return runner.run(binary, list(listeners.values()), cases, progress=progress)
