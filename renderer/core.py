"""The pipeline every command shares, without click: spec -> model -> plan (`prepare`), then the
comparison with the tree on disk (`compare_prepared`). The commands (renderer/commands/) call it and
return data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .clusters import ClusterChange, cluster_changes
from .envoy.load import EnvoyLoad, EnvoyStep, Loading
from .errors import Finding, OutputError, RenderBug
from .files import is_within
from .output import Changes, check_paths, compare, locked, survey
from .plan import Plan, build_plan
from .safepath import Inputs, OutputTree
from .spec import LoadedSpec, load_spec

ENVOY = EnvoyStep()  # the default: every filter configuration loaded in a real Envoy


def warnings_of(spec: LoadedSpec, envoy: EnvoyLoad | None) -> tuple[Finding, ...]:
    return tuple(sorted(spec.warnings + (envoy.notes if envoy is not None else ())))


@dataclass(frozen=True)
class Prepared:
    spec: LoadedSpec
    plan: Plan
    out: Path
    envoy: EnvoyLoad | None = None  # None: the Envoy step was turned off

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return warnings_of(self.spec, self.envoy)


@dataclass(frozen=True)
class CheckResult:
    changes: Changes
    warnings: tuple[Finding, ...]
    interrupted: bool  # a render was killed after its commit point and is not finished
    clusters: tuple[ClusterChange, ...] = ()  # with clusters: what the change does to each of them

    @property
    def clean(self) -> bool:
        return not self.interrupted and not self.changes.drift and not self.changes.hand_edited


def prepare(spec_path: Path, out: Path | None, *, keep_objects: bool = False,
            envoy: EnvoyStep = ENVOY) -> Prepared:
    out_dir = (out if out is not None else spec_path.parent)
    loaded = load_spec(spec_path, out=out_dir)
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


def guard_out(prepared: Prepared) -> None:
    out = prepared.out
    root = prepared.spec.filter_set.root
    if out.is_symlink() and not is_within(os.path.realpath(root), os.path.realpath(out)):
        # An explicit --out elsewhere is the user's choice; a link that silently leads there is not.
        raise OutputError(f"{out}: is a symlink to {os.path.realpath(out)}, outside the repository of "
                          f"{prepared.spec.filter_set.spec_path.name}; pass the real directory as --out")


def guard_paths(prepared: Prepared, tree: OutputTree) -> None:
    check_paths(prepared.plan, tree, prepared.spec.filter_set.spec_path)


@contextmanager
def output_errors(out: Path) -> Iterator[None]:
    """Whatever the output tree does (a permission, a full disk, a vanished directory) is an
    OutputError naming the path, not a traceback."""
    try:
        yield
    except OSError as e:
        where = e.filename if e.filename else out
        raise OutputError(f"{where}: {e.strerror or e}; fix it (permissions, space, a path in the way), "
                          "then run again") from None


def compare_prepared(prepared: Prepared, *, keep_current: bool = False) -> CheckResult:
    """What a render of `prepared` would change on disk (check's verdict; diff keeps the bytes on disk
    of every differing file with keep_current)."""
    out_dir = prepared.out
    if not out_dir.is_dir():
        changes = Changes(added=sorted(prepared.plan.files))
        return CheckResult(changes, prepared.warnings, False, _cluster_changes(prepared, changes))
    with output_errors(out_dir):
        guard_out(prepared)  # before the lock: never lock a directory a stray link leads to
        tree = OutputTree(out_dir)
        inputs = Inputs(prepared.spec.filter_set)
        with locked(out_dir, exclusive=False):
            # The staging area is judged as render would judge it: one it would refuse is refused.
            interrupted = survey(tree, inputs).committed
            guard_paths(prepared, tree)
            changes = compare(prepared.plan, tree, inputs, keep_current=keep_current)
    return CheckResult(changes, prepared.warnings + tuple(changes.disowned), interrupted,
                       _cluster_changes(prepared, changes))


def _cluster_changes(prepared: Prepared, changes: Changes) -> tuple[ClusterChange, ...]:
    fs = prepared.spec.filter_set
    if not fs.clusters:
        return ()
    return cluster_changes(fs, [*changes.added, *changes.changed, *changes.removed])
