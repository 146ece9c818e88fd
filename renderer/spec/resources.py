"""A service's resources and its selector: what kustomize will load, and which pods the filters reach."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import is_within
from ..model import DEFAULTS
from ..workloads import KUSTOMIZATION_NAMES, PathProblem, Workload, WorkloadReader, inside_stat, is_remote
from .context import Path_, SpecContext
from .labels import label_key_problem, label_value_problem, path_text_problem

Selector = tuple[tuple[str, str], ...]


class Resources:
    """The services' resource directories, each resolved and scanned once, and the tree render writes."""

    def __init__(self, root: Path, out: Path | None, *, fleet: bool) -> None:
        self.root = root
        self.reader = WorkloadReader(root)
        # The output tree (render's default; load_spec's `out` when the caller knows another):
        # resources must never load what it writes.
        self.out = os.path.realpath(out) if out is not None else os.fspath(root)
        self.outputs = [os.path.join(self.out, name) for name in
                        ("base", "overlays", "gitops", ".wasm-gitops.tmp", *KUSTOMIZATION_NAMES,
                         # A fleet's trees and entry points; without clusters, clusters/ may hold anything.
                         *(("trees", "clusters") if fleet else ()))]
        self._dirs: dict[str, Path | str | None] = {}

    def directory(self, res: str) -> Path | str | None:
        """The real directory a service resource names, or what is wrong with it; None if remote."""
        if res not in self._dirs:
            self._dirs[res] = self._directory(res)
        return self._dirs[res]

    def _directory(self, res: str) -> Path | str | None:
        if is_remote(res):
            return None
        try:
            path, mode = inside_stat(self.root, res, "resource")
        except PathProblem as e:
            return str(e)
        if mode is None:
            return f"resource {res!r} does not exist; fix the path (relative to filters.yaml)"
        if mode != stat.S_IFDIR:
            return (f"resource {res!r} is a file; kustomize only loads directories from outside an overlay: "
                    "point it at the directory with the kustomization.yaml")
        return path

    def generated(self, path: Path, loaded: set[str], service: str) -> str | None:
        """What is wrong with a resource that loads the output wasm-gitops writes, if it does."""
        res = os.path.relpath(path, self.root)
        own = os.path.join(self.out, "overlays", service)
        if is_within(own, str(path)):
            return (f"resource {res!r} is this service's own overlay, which wasm-gitops writes: the overlay "
                    "would include itself; point resources at the workload's own manifests")
        for f in sorted({str(path), *loaded}):
            if any(is_within(g, f) for g in self.outputs):
                what = ("this service's own overlay" if is_within(own, f) else
                        f"{os.path.relpath(f, self.root)}, which wasm-gitops writes")
                return (f"resource {res!r} includes {what}: the rendered tree would include itself; point "
                        "resources at the workload's own manifests")
        return None


@dataclass
class _Loaded:
    """What a service's resources hold, as far as they could be read."""

    local: list[Path] = field(default_factory=list)
    remote: bool = False
    failed: bool = False  # some resource could not be read: its workloads are unknown


def _declared_labels(ctx: SpecContext, p: Path_, declared: dict[str, str]) -> set[str]:
    """Check the selector's own labels; the keys that are not valid labels (reported)."""
    invalid: set[str] = set()
    for key, value in declared.items():
        problem = label_key_problem(key)
        if problem:
            ctx.error(p + ("selector", key), f"selector: {problem}; fix the key", key=True)
            invalid.add(key)
        problem = label_value_problem(value)
        if problem:
            ctx.error(p + ("selector", key), f"selector: {problem}; fix the value")
            invalid.add(key)
    return invalid


def _load(ctx: SpecContext, resources: Resources, p: Path_, raw: dict[str, Any], owners: dict[str, str]) -> _Loaded:
    """Every resource of the service resolved, scanned and claimed for it (a directory loaded by two
    services would put the same objects in the root kustomization twice)."""
    loaded = _Loaded()
    first_at: dict[str, int] = {}
    for j, res in enumerate(raw["resources"]):
        rp = p + ("resources", j)
        problem = path_text_problem("resource", res)
        if problem:
            ctx.error(rp, problem)
            loaded.failed = True
            continue
        path = resources.directory(res)
        # The same directory spelt twice (apps/x, ./apps/x/, a link to it) would be loaded twice,
        # which kustomize refuses: objects with the same id.
        same = str(path) if isinstance(path, Path) else res if path is None else None
        if same is not None:
            if same in first_at:
                k = first_at[same]
                ctx.error(rp, f"resource {res!r} is the same as resources[{k}] {raw['resources'][k]!r}; list it once")
                loaded.failed = True
                continue
            first_at[same] = j
        if path is None:
            loaded.remote = True
            continue
        loaded.failed = True  # until this resource proves readable
        if isinstance(path, str):
            ctx.error(rp, path)
        elif _claim(ctx, resources, rp, res, path, owners, raw["name"]):
            loaded.failed = False
            loaded.local.append(path)
    return loaded


def _claim(ctx: SpecContext, resources: Resources, rp: Path_, res: str, path: Path, owners: dict[str, str],
           service: str) -> bool:
    """Scan one local resource and record the files it loads as the service's: False where it cannot be used."""
    scan = resources.reader.scan(path)
    for problem in scan.problems:
        ctx.error(rp, f"resource {res!r}: {problem}")
    if scan.problems:
        return False
    generated = resources.generated(path, scan.files, service)
    if generated:
        ctx.error(rp, generated)
        return False
    loaded = scan.files | {str(path)}
    clash = next((f for f in sorted(loaded) if owners.get(f, service) != service), None)
    if clash is not None:
        ctx.error(rp, f"resource {res!r} overlaps with service {owners[clash]!r} (both load "
                  f"{os.path.relpath(clash, ctx.root)}); the root kustomization would hold those "
                  "objects twice: give each service its own resources")
    for f in loaded:
        owners.setdefault(f, service)
    return True


def _pod_labels(ctx: SpecContext, p: Path_, workload: Workload) -> Selector | None:
    """The selector a service without one gets: its Deployment's pod-template labels, if they can be one."""
    deployment = workload.name
    if not workload.pod_labels:
        ctx.error(p + ("deployment",), f"Deployment {deployment!r} has no pod-template labels to "
                  "select; add 'selector'")
        return None
    bad = [(k, v, problem) for k, v in workload.pod_labels
           if (problem := label_key_problem(k) or label_value_problem(v))]
    if bad:
        label, value, problem = bad[0]
        ctx.error(p, f"Deployment {deployment!r} has the pod-template label {label}={value!r}: {problem}, "
                  "so no selector can name it (and Kubernetes refuses the Deployment): fix the label in the Deployment")
        return None
    return workload.pod_labels


def _against_workload(ctx: SpecContext, p: Path_, raw: dict[str, Any], workload: Workload,
                      declared: dict[str, str] | None, invalid: set[str]) -> Selector | None:
    """The selector checked against (or taken from) the Deployment the resources hold."""
    namespace, deployment = raw.get("namespace", DEFAULTS.namespace), raw["deployment"]
    if workload.namespace is not None and workload.namespace != namespace:
        ctx.error(p + ("namespace",) if "namespace" in raw else p + ("deployment",),
                  f"Deployment {deployment!r} is in namespace {workload.namespace!r}, the service says "
                  f"{namespace!r}; make them the same")
    if declared is None:
        return _pod_labels(ctx, p, workload)
    pod = dict(workload.pod_labels)
    wrong = [f"{k}={v}" for k, v in sorted(declared.items()) if pod.get(k) != v and k not in invalid]
    if wrong:
        have = ", ".join(f"{k}={v}" for k, v in sorted(pod.items())) or "none"
        ctx.error(p + ("selector",), f"selector {', '.join(wrong)} matches no pod of Deployment "
                  f"{deployment!r} (its pods have {have}); the EnvoyFilter would silently do nothing: "
                  "fix the selector")
    return tuple(sorted(declared.items()))


def selector(ctx: SpecContext, resources: Resources, p: Path_, raw: dict[str, Any],
             owners: dict[str, str]) -> Selector | None:
    """The pods a service's filters reach: its selector's labels checked, its resources loaded, and the
    selector matched against (or taken from) the Deployment they hold."""
    declared: dict[str, str] | None = raw.get("selector")
    invalid = _declared_labels(ctx, p, declared or {})
    loaded = _load(ctx, resources, p, raw, owners)
    if loaded.failed:
        return tuple(sorted(declared.items())) if declared else None
    deployment = raw["deployment"]
    found = [w for path in loaded.local for w in resources.reader.scan(path).deployments if w.name == deployment]
    if found:
        return _against_workload(ctx, p, raw, found[0], declared, invalid)
    if loaded.local and not loaded.remote:
        ctx.error(p + ("deployment",), f"Deployment {deployment!r} is not in the service's resources; fix the "
                  "name or the resources")
        return None
    if declared is None:
        ctx.error(p + ("resources",) if loaded.remote else p, "selector is required when the Deployment "
                  "is in remote resources (it cannot be read); add the pod labels under 'selector'")
    return tuple(sorted(declared.items())) if declared else None
