"""The objects that make Argo CD or Flux apply the rendered tree, written under gitops/ beside it.

They are bootstrapped once (kubectl apply -f gitops/argocd/, or from an app-of-apps / a Flux
Kustomization over gitops/flux/) and are deliberately not in the root kustomization.yaml: the root is
what these objects point at, and an Application that deploys itself is a loop. No file here is named
kustomization.yaml, so neither kustomize nor Flux mistakes the directory for a kustomize root.

Why each sync setting is what it is: docs/gitops.md.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .model import ArgoCD, FilterSet, Flux, GitOps
from .objects import MANAGED_BY

if TYPE_CHECKING:
    from .clusters import Shape

Obj = dict[str, Any]

ARGOCD_API = "argoproj.io/v1alpha1"
FLUX_API = "kustomize.toolkit.fluxcd.io/v1"

# Application-wide sync options (docs/gitops.md has the long form):
# - ServerSideApply: a ConfigMap carries up to 1 MiB of base64; client-side apply would keep a second
#   copy in last-applied-configuration (and fails past 262,144 bytes), and Flux applies server-side too.
# - FailOnSharedResource: the overlays carry the workloads; a Deployment also synced by another
#   Application would have its pod-template annotations flipped by each sync, rolling it every time.
# - ApplyOutOfSyncOnly: every sync would otherwise re-send every unchanged (immutable) binary.
# Not PruneLast app-wide: the ConfigMaps already carry it, and an EnvoyFilter whose filter was removed
# must go with the rollout, not after it (new pods no longer mount the file it names).
# Not CreateNamespace: a namespace created here would lack istio-injection, so its pods would get no
# sidecar and no filter; the mesh's namespaces must exist with their labels.
SYNC_OPTIONS = ("ServerSideApply=true", "FailOnSharedResource=true", "ApplyOutOfSyncOnly=true")
# An automated sync that failed is not retried for the same commit; a webhook blip (istiod restarting
# while it validates an EnvoyFilter) would otherwise leave the app failed until the next commit.
def _retry() -> Obj:
    return {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"}}


def repo_path(g: GitOps, fs: FilterSet, out: Path) -> str:
    """Where the rendered root lives inside the repository, as the controllers read it."""
    if g.path is not None:
        return g.path
    rel = Path(os.path.relpath(out.resolve(), fs.root)).as_posix()
    if rel == ".." or rel.startswith("../"):
        raise UsageError(f"{out}: the output directory is outside the directory of {fs.spec_path.name}, so "
                         "gitops.path cannot be derived from it; set gitops.path to the output's path in the "
                         "repository")
    if any(c.isspace() for c in rel):
        # The same rule as for an explicit gitops.path (checked with the spec): no whitespace in the
        # paths Argo CD and Flux are given.
        raise UsageError(f"{out}: the output directory's path {rel!r} holds whitespace, which wasm-gitops "
                         "does not write into Argo CD or Flux paths; render into a directory without it")
    return rel


def _join(path: str, *parts: str) -> str:
    return posixpath.join(path, *parts) if path != "." else posixpath.join(*parts)


def controller_objects(fs: FilterSet, out: Path, shapes: list[Shape] | None = None) -> list[tuple[str, Obj]]:
    """(file under the output directory, object) for every gitops object the spec asks for; with the
    shapes of a spec with clusters, those of the fleet (fleet_objects)."""
    g = fs.gitops
    if g is None:
        return []
    path = repo_path(g, fs, out)
    if shapes is not None:
        return _fleet_objects(fs, g, path, shapes)
    found: list[tuple[str, Obj]] = []
    if g.argocd is not None:
        found += _argocd(g, g.argocd, path)
    if g.flux is not None:
        found += _flux(g, g.flux, path, sorted([s.name for s in fs.services] + [w.name for w in fs.gateways]))
    return found


# ------------------------------------------------------------------------------------------ Argo CD

def _sync_policy(argo: ArgoCD) -> Obj:
    policy: Obj = {}
    if argo.automated:
        policy["automated"] = {"prune": True, "selfHeal": True}
    policy["syncOptions"] = list(SYNC_OPTIONS)
    policy["retry"] = _retry()
    return policy


def _app_spec(g: GitOps, argo: ArgoCD, path: str) -> Obj:
    assert g.repo_url is not None  # the schema requires repoURL with argocd
    # No destination namespace: every object the tree holds carries its own (the overlays set it).
    return {
        "project": argo.project,
        "source": {"repoURL": g.repo_url, "targetRevision": g.target_revision, "path": path},
        "destination": {"server": argo.destination_server},
        "syncPolicy": _sync_policy(argo),
    }


def application(g: GitOps, argo: ArgoCD, name: str, path: str) -> Obj:
    # No resources-finalizer: the tree carries the teams' Deployments, and deleting this object (to
    # switch modes, or to stop using wasm-gitops) must not delete them.
    return {
        "apiVersion": ARGOCD_API,
        "kind": "Application",
        "metadata": {"name": name, "namespace": argo.namespace, "labels": dict(MANAGED_BY)},
        "spec": _app_spec(g, argo, path),
    }


def application_set(g: GitOps, argo: ArgoCD, path: str) -> Obj:
    """One Application per overlay directory: a service added to filters.yaml needs no new object here."""
    assert g.repo_url is not None
    generators = [{"git": {"repoURL": g.repo_url, "revision": g.target_revision,
                           "directories": [{"path": _join(path, "overlays", "*")}]}}]
    template = {"metadata": {"name": f"{g.name}-{{{{.path.basename}}}}",
                             "labels": {**MANAGED_BY, "wasm-gitops.io/service": "{{.path.basename}}"}},
                "spec": _app_spec(g, argo, "{{.path.path}}")}
    return _application_set(g, argo, generators, template)


def _application_set(g: GitOps, argo: ArgoCD, generators: list[Obj], template: Obj,
                     strategy: Obj | None = None) -> Obj:
    """The ApplicationSet both layouts share: Go templates that fail on a missing key, and the
    generated Applications' resources kept when one is deleted."""
    spec: Obj = {"goTemplate": True, "goTemplateOptions": ["missingkey=error"], "generators": generators}
    if strategy is not None:
        spec["strategy"] = strategy
    spec["template"] = template
    # A service (or cluster) dropped from filters.yaml removes its Application; keep that from
    # cascading to the workloads (the generated Applications get no finalizer).
    spec["syncPolicy"] = {"preserveResourcesOnDeletion": True}
    return {"apiVersion": ARGOCD_API, "kind": "ApplicationSet",
            "metadata": {"name": g.name, "namespace": argo.namespace, "labels": dict(MANAGED_BY)}, "spec": spec}


def _argocd(g: GitOps, argo: ArgoCD, path: str) -> list[tuple[str, Obj]]:
    if argo.mode == "Application":
        return [(f"gitops/argocd/{g.name}.application.yaml", application(g, argo, g.name, path))]
    base = application(g, argo, f"{g.name}-base", _join(path, "base"))
    return [(f"gitops/argocd/{g.name}-base.application.yaml", base),
            (f"gitops/argocd/{g.name}.applicationset.yaml", application_set(g, argo, path))]


# ------------------------------------------------------------------------------------------ Flux

def flux_kustomization(flux: Flux, name: str, path: str, depends_on: str | None = None) -> Obj:
    spec: Obj = {}
    if depends_on is not None:
        spec["dependsOn"] = [{"name": depends_on}]
    source: Obj = {"kind": flux.source_ref.kind, "name": flux.source_ref.name}
    if flux.source_ref.namespace is not None:
        source["namespace"] = flux.source_ref.namespace
    spec["interval"] = flux.interval
    spec["sourceRef"] = source
    spec["path"] = "./" if path == "." else f"./{path}"
    spec["prune"] = True
    # Ready only once every Deployment has rolled out: dependants (and alerts) see a finished rollout.
    spec["wait"] = True
    # The tree carries the teams' Deployments: deleting this object must not delete them.
    spec["deletionPolicy"] = "Orphan"
    return {
        "apiVersion": FLUX_API,
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": flux.namespace, "labels": dict(MANAGED_BY)},
        "spec": spec,
    }


def _flux(g: GitOps, flux: Flux, path: str, services: list[str]) -> list[tuple[str, Obj]]:
    if flux.mode == "Kustomization":
        return [(f"gitops/flux/{g.name}.yaml", flux_kustomization(flux, g.name, path))]
    base = f"{g.name}-base"
    found = [(f"gitops/flux/{base}.yaml", flux_kustomization(flux, base, _join(path, "base")))]
    for service in services:
        name = f"{g.name}-{service}"
        found.append((f"gitops/flux/{name}.yaml",
                      flux_kustomization(flux, name, _join(path, "overlays", service), depends_on=base)))
    return found


# ------------------------------------------------------------------------------------------ fleets

CLUSTER_LABEL = "wasm-gitops.io/cluster"
WAVE_LABEL = "wasm-gitops.io/wave"
FLUX_ENTRY = "wasm-filters.yaml"


def _fleet_objects(fs: FilterSet, g: GitOps, path: str, shapes: list[Shape]) -> list[tuple[str, Obj]]:
    """A spec with clusters: one ApplicationSet for the whole fleet, and Flux's entry point per cluster."""
    found: list[tuple[str, Obj]] = []
    if g.argocd is not None:
        found.append((f"gitops/argocd/{g.name}.applicationset.yaml", fleet_application_set(fs, g, g.argocd, path,
                                                                                           shapes)))
    if g.flux is not None:
        for shape in shapes:
            for cluster in shape.clusters:
                found.append((f"clusters/{cluster.name}/{FLUX_ENTRY}",
                              flux_kustomization(g.flux, g.name, _join(path, shape.path))))
    return sorted(found, key=lambda pair: pair[0])


def fleet_application_set(fs: FilterSet, g: GitOps, argo: ArgoCD, path: str, shapes: list[Shape]) -> Obj:
    """A matrix per cluster (the clusters its labels select x the directory of its tree), and RollingSync
    steps by wave, in the order the spec lists them."""
    assert g.repo_url is not None
    tree = {c.name: shape for shape in shapes for c in shape.clusters}
    generators: list[Obj] = []
    for cluster in fs.clusters:
        generators.append({"matrix": {"generators": [
            {"clusters": {"selector": {"matchLabels": dict(cluster.labels)},
                          # What the steps match, from the spec rather than from the cluster's Secret:
                          # a Secret without a wave label must not fall out of the rollout.
                          "values": {"cluster": cluster.name, "wave": cluster.wave}}},
            {"git": {"repoURL": g.repo_url, "revision": g.target_revision,
                     "directories": [{"path": _join(path, tree[cluster.name].path)}]}},
        ]}})
    max_update = dict(argo.max_update)
    steps: list[Obj] = []
    for wave in fs.waves():
        step: Obj = {"matchExpressions": [{"key": WAVE_LABEL, "operator": "In", "values": [wave]}]}
        if wave in max_update:
            step["maxUpdate"] = max_update[wave]
        steps.append(step)
    spec = _app_spec(g, argo, "{{.path.path}}")
    spec["destination"] = {"server": "{{.server}}"}
    # RollingSync syncs each step itself and turns automated sync off on the Applications it
    # generates (with a warning for each one that asks for it): the template does not ask.
    spec["syncPolicy"].pop("automated", None)
    # Argo CD's cluster name: unique among its clusters, even when one entry's labels select several.
    template = {"metadata": {"name": f"{g.name}-{{{{.name}}}}",
                             "labels": {**MANAGED_BY, CLUSTER_LABEL: "{{.values.cluster}}",
                                        WAVE_LABEL: "{{.values.wave}}"}},
                "spec": spec}
    return _application_set(g, argo, generators, template,
                            {"type": "RollingSync", "rollingSync": {"steps": steps}})
