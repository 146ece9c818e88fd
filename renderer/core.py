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

from .envoy.load import EnvoyLoad, EnvoyStep, Loading
from .envoy.load import run as load_in_envoy
from .errors import Finding, OutputError, RenderBug, UsageError
from .files import is_within
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

ENVOY = EnvoyStep()  # the default: every filter configuration loaded in a real Envoy


@dataclass(frozen=True)
class Prepared:
    spec: LoadedSpec
    plan: Plan
    out: Path
    envoy: EnvoyLoad | None = None  # None: the Envoy step was turned off

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return _warnings(self.spec, self.envoy)


@dataclass(frozen=True)
class Validated:
    spec: LoadedSpec
    envoy: EnvoyLoad | None

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return _warnings(self.spec, self.envoy)


def _warnings(spec: LoadedSpec, envoy: EnvoyLoad | None) -> tuple[Finding, ...]:
    return tuple(sorted(spec.warnings + (envoy.notes if envoy is not None else ())))


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


def validate(spec_path: Path, envoy: EnvoyStep = ENVOY) -> Validated:
    loaded = load_spec(spec_path)
    return Validated(loaded, load_in_envoy(loaded, envoy))


def prepare(spec_path: Path, out: Path | None, *, keep_objects: bool = False,
            envoy: EnvoyStep = ENVOY) -> Prepared:
    loaded = load_spec(spec_path, meanwhile=warm_up)
    out_dir = (out if out is not None else spec_path.parent)
    # Envoy loads the filters in a helper process while the plan is built; its answer is taken before
    # any comparison or write: what Envoy refuses is a spec error, and nothing is written.
    loading = Loading(loaded, envoy)
    try:
        plan = build_plan(loaded.filter_set, out_dir, keep_objects=keep_objects)
        if plan.problems:
            raise RenderBug("wasm-gitops rendered objects that fail validation (a bug in wasm-gitops, please "
                            "report it):\n" + "\n".join(str(p) for p in plan.problems))
        return Prepared(loaded, plan, out_dir, loading.result())
    finally:
        loading.cancel()


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
           fault: Callable[[str], None] | None = None, envoy: EnvoyStep = ENVOY) -> RenderResult:
    fault = fault or fault_from_env(os.environ.get("WASM_GITOPS_KILL_AT"))
    prepared = prepare(spec_path, out, envoy=envoy)
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


def check(spec_path: Path, out: Path | None = None, envoy: EnvoyStep = ENVOY) -> CheckResult:
    return _check(prepare(spec_path, out, envoy=envoy))


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


def unified_diff(spec_path: Path, out: Path | None = None,
                 envoy: EnvoyStep = ENVOY) -> tuple[str, CheckResult]:
    from difflib import unified_diff as unified  # only diff needs it: not imported by every command

    prepared = prepare(spec_path, out, envoy=envoy)
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
