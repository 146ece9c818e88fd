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

from .clusters import ClusterChange, cluster_changes
from .conformance import warm_up
from .envoy.load import EnvoyLoad, EnvoyStep, Loading
from .envoy.load import run as load_in_envoy
from .errors import Finding, OutputError, RenderBug, UsageError
from .files import is_within
from .model import Filter, FilterSet, OutputKind, Service
from .output import (
    Changes,
    check_paths,
    compare,
    locked,
    recover,
    survey,
    write,
)
from .plan import Plan, build_plan
from .safepath import Inputs, OutputTree
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
    clusters: tuple[ClusterChange, ...] = ()  # with clusters: what the change does to each of them

    @property
    def clean(self) -> bool:
        return not self.interrupted and not self.changes.drift and not self.changes.hand_edited


def validate(spec_path: Path, envoy: EnvoyStep = ENVOY) -> Validated:
    loaded = load_spec(spec_path)
    return Validated(loaded, load_in_envoy(loaded, envoy))


def prepare(spec_path: Path, out: Path | None, *, keep_objects: bool = False,
            envoy: EnvoyStep = ENVOY) -> Prepared:
    out_dir = (out if out is not None else spec_path.parent)
    loaded = load_spec(spec_path, meanwhile=warm_up, out=out_dir)
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
           fault: Callable[[str], None] | None = None, envoy: EnvoyStep = ENVOY) -> RenderResult:
    fault = fault or fault_from_env(os.environ.get("WASM_GITOPS_KILL_AT"))
    prepared = prepare(spec_path, out, envoy=envoy)
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


def check(spec_path: Path, out: Path | None = None, envoy: EnvoyStep = ENVOY) -> CheckResult:
    return _check(prepare(spec_path, out, envoy=envoy))


def _check(prepared: Prepared, *, keep_current: bool = False) -> CheckResult:
    out_dir = prepared.out
    if not out_dir.is_dir():
        changes = Changes(added=sorted(prepared.plan.files))
        return CheckResult(changes, prepared.warnings, False, _cluster_changes(prepared, changes))
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
    return CheckResult(changes, prepared.warnings + tuple(changes.disowned), interrupted,
                       _cluster_changes(prepared, changes))


def _cluster_changes(prepared: Prepared, changes: Changes) -> tuple[ClusterChange, ...]:
    fs = prepared.spec.filter_set
    if not fs.clusters:
        return ()
    return cluster_changes(fs, [*changes.added, *changes.changed, *changes.removed])


# ------------------------------------------------------------------------------------------ verify

def _verify_targets(prepared: Prepared) -> list[tuple[str, FilterSet, list[tuple[str, dict[str, Any]]]]]:
    """(name suffix, the spec as one target sees it, its rendered objects): the spec itself, or with
    clusters one per distinct shape, each through the objects of its own tree."""
    from . import clusters

    fs = prepared.spec.filter_set
    if not fs.clusters:
        return [("", fs, prepared.plan.objects)]
    found: list[tuple[str, FilterSet, list[tuple[str, dict[str, Any]]]]] = []
    for shape in clusters.shapes(fs):
        plan = build_plan(shape.filter_set, prepared.out, keep_objects=True)
        found.append((f"@{shape.tree}", shape.filter_set, plan.objects))
    return found


def _uses_filter(fs: FilterSet, f: Filter) -> bool:
    return any(sf.filter.name == f.name for s in fs.services for sf in s.filters)


def _verify_cases(fs: FilterSet, filters: list[Filter], services: list[Service], pairs: list[tuple[str, dict[str, Any]]],
                  modules: Path, suffix: str, listeners: dict[str, Any], cases: list[Any]) -> None:
    """The listeners and cases of one target; with clusters every name carries its tree (@tree)."""
    from . import verify as runner
    from .envoy import istio

    for f in filters:
        # The filter as the first service that loads it renders it (EnvoyFilter or WasmPlugin).
        output: OutputKind = next((s.output for s in fs.services for sf in s.filters
                                   if sf.filter.name == f.name), "EnvoyFilter")
        by_config: dict[str | None, str] = {}
        for t in f.tests:
            config = t.config if t.config is not None else f.config
            if config not in by_config:
                name = by_config[config] = f"filter:{f.name}{suffix}:{len(by_config)}"
                http_filter = istio.http_filter(fs, f, config, modules, output=output)
                listeners[name] = runner.Listener(name, "SIDECAR_INBOUND", (http_filter,), f"{f.name}.test")
            cases.append(runner.Case(f.name + suffix, "filter", by_config[config], t, "trace"))
    problems: dict[str, str] = {}
    chains = istio.filter_set_chains(fs, pairs, modules, only={s.name for s in services},
                                     on_error=lambda name, e: problems.__setitem__(name, str(e)),
                                     images=_image_puller(fs))
    by_service = {c.service: c for c in chains}
    for s in services:
        name = f"service:{s.name}{suffix}"
        host = f"{s.name}.{s.namespace}.svc.cluster.local"
        chain = by_service.get(s.name)
        listeners[name] = runner.Listener(name, s.context, tuple(f.http_filter for f in chain.filters)
                                          if chain else (), host, problems.get(s.name))
        level = dict(s.proxy_log_level).get("wasm", runner.ISTIO_DEFAULT_WASM_LEVEL)
        cases += [runner.Case(s.name + suffix, "service", name, t, level) for t in s.tests]


def _image_puller(fs: FilterSet) -> Callable[[str], bytes]:
    """Pulls the module of an image that `push` recorded in the lock (by digest, its module's sha256
    checked), with the credentials `push` uses. Any other reference is refused unpulled: verify reaches
    no registry that the spec's lock does not name."""
    pinned = {f.image.pinned: f.binary.sha256 for f in fs.filters if f.image is not None}

    def pull(reference: str) -> bytes:
        bare = reference.removeprefix("oci://")
        if bare not in pinned:
            raise UsageError("verify pulls only the images filters.lock pins (image: plus 'wasm-gitops push'); "
                             "this one is not")
        from . import oci

        return oci.pull_pinned(bare, pinned[bare], os.environ)

    return pull


def verify(spec_path: Path, names: tuple[str, ...] = (), *, envoy: Path | None = None,
           progress: Callable[[int, int, Any], None] | None = None) -> list[Any]:
    """Run the declared tests of each filter and service (or of those named) in a real Envoy: a
    filter's tests through that filter alone, a service's through its whole rendered chain."""
    import tempfile

    from . import verify as runner
    from .envoy.binary import find_envoy

    # verify's own Envoy loads each chain, and a refused module or configuration fails the cases
    # that use it, with Envoy's reason: the separate load step would only stop the command earlier.
    prepared = prepare(spec_path, None, keep_objects=True, envoy=EnvoyStep(enabled=False))
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
        for suffix, view, pairs in _verify_targets(prepared):
            picked = {s.name for s in view.services}
            _verify_cases(view, [f for f in filters if _uses_filter(view, f)] if suffix else filters,
                          [s for s in services if s.name in picked], pairs, modules, suffix, listeners, cases)
        return runner.run(binary, list(listeners.values()), cases, progress=progress)
