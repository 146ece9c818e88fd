"""How the tree is delivered: gitops (Argo CD, Flux) and the clusters of a fleet, with what each cluster's
Istio can render."""

from __future__ import annotations

import difflib
import posixpath
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .. import istio_versions
from ..model import DEFAULTS, ArgoCD, Cluster, Flux, FluxSourceRef, GitOps, OutputKind, Service
from .context import Path_, SpecContext
from .labels import label_key_problem
from .services import output_kind


def gitops(ctx: SpecContext, raw: dict[str, Any]) -> GitOps:
    name = raw.get("name", DEFAULTS.gitops_name)
    path = raw.get("path")
    if path is not None:
        parts = PurePosixPath(path).parts
        if path.startswith("/") or ".." in parts or "\\" in path:
            ctx.error(("gitops", "path"), f"gitops.path {path!r} must be a '/'-separated path relative to "
                      "the repository root, without '..'; fix it")
        elif any(c.isspace() for c in path):
            ctx.error(("gitops", "path"), f"gitops.path {path!r} holds whitespace, which wasm-gitops "
                      "does not write into Argo CD or Flux paths; rename the directory")
        path = posixpath.normpath(path)
    else:
        _path_hint(ctx)
    argocd = _argocd(raw["argocd"]) if "argocd" in raw else None
    flux = _flux(raw["flux"]) if "flux" in raw else None
    per_service = [what for what, on in (
        ("Argo CD Application", argocd is not None and argocd.mode == "ApplicationSet"),
        ("Flux Kustomization", flux is not None and flux.mode == "PerService")) if on]
    if per_service:
        _per_service_names(ctx, name, " and ".join(per_service))
    return GitOps(name, raw.get("repoURL"), raw.get("targetRevision", DEFAULTS.target_revision), path, argocd, flux)


def _argocd(a: dict[str, Any]) -> ArgoCD:
    return ArgoCD(a.get("mode", DEFAULTS.argocd_mode), a.get("namespace", DEFAULTS.argocd_namespace),
                  a.get("project", DEFAULTS.argocd_project), a.get("destinationServer", DEFAULTS.destination_server),
                  a.get("automated", DEFAULTS.automated), tuple((a.get("maxUpdate") or {}).items()))


def _flux(f: dict[str, Any]) -> Flux:
    ref = f.get("sourceRef", {"name": DEFAULTS.source_name})
    return Flux(f.get("mode", DEFAULTS.flux_mode), f.get("namespace", DEFAULTS.flux_namespace),
                FluxSourceRef(ref.get("kind", DEFAULTS.source_kind), ref["name"], ref.get("namespace")),
                f.get("interval", DEFAULTS.interval))


def _per_service_names(ctx: SpecContext, name: str, what: str) -> None:
    # Controllers label what they apply with their object's name (Argo CD's instance label,
    # Flux's kustomize.toolkit.fluxcd.io/name): a label value holds 63 characters.
    if len(f"{name}-base") > 63:
        ctx.error(("gitops", "name"), f"the {what} for base/ would be named {name}-base, more than 63 "
                  "characters; shorten gitops.name")
    for i, service in enumerate(ctx.data.get("services", [])):
        sname = service["name"]
        if sname == "base":
            ctx.error(("services", i, "name"), f"service name 'base' collides with the {what} for base/ "
                      f"({name}-base); rename the service")
        elif len(f"{name}-{sname}") > 63:
            ctx.error(("services", i, "name"), f"the {what} for this service would be named "
                      f"{name}-{sname}, more than 63 characters; shorten the service name or gitops.name")
    for i, gateway in enumerate(ctx.data.get("gateways", [])):
        if gateway["name"] == "base" or len(f"{name}-{gateway['name']}") > 63:
            ctx.error(("gateways", i, "name"), f"the {what} for this gateway would be named "
                      f"{name}-{gateway['name']}, which collides with base/'s or has more than 63 "
                      "characters; rename the gateway or shorten gitops.name")


def _path_hint(ctx: SpecContext) -> None:
    """Argo CD and Flux read paths from the repository root; the default assumes filters.yaml is there."""
    for parent in (ctx.root, *ctx.root.parents):
        if (parent / ".git").exists():
            if parent != ctx.root:
                inner = ctx.root.relative_to(parent).as_posix()
                ctx.warnings.append(ctx.doc.finding(
                    ("gitops",), f"filters.yaml is in {inner}/ of the Git repository {parent}, but gitops.path "
                    "defaults to the output directory relative to filters.yaml; set "
                    f"path: {inner} (or where --out writes, from the repository root)", key=True, severity="warning"))
            return


# ------------------------------------------------------------------------------------------ clusters

@dataclass
class _Fleet:
    """What every cluster is checked against, and what the clusters before it claimed."""

    services: dict[str, Service]  # the services modelled, by name
    raw_services: dict[str, dict[str, Any]]  # every service declared, modelled or refused
    top_output: OutputKind
    names: set[str] = field(default_factory=set)
    selectors: dict[tuple[tuple[str, str], ...], str] = field(default_factory=dict)


def clusters(ctx: SpecContext, services: list[Service], gitops: GitOps | None) -> list[Cluster]:
    raw_clusters: list[dict[str, Any]] = ctx.data.get("clusters", [])
    fleet = _Fleet({s.name: s for s in services}, {raw["name"]: raw for raw in ctx.data.get("services", [])},
                   output_kind(ctx.data))
    found = [c for i, raw in enumerate(raw_clusters) if (c := _cluster(ctx, fleet, ("clusters", i), raw)) is not None]
    if raw_clusters:
        _idle_services(ctx, fleet, found)
    _fleet_settings(ctx, bool(raw_clusters), gitops, found)
    return found


def _cluster(ctx: SpecContext, fleet: _Fleet, p: Path_, raw: dict[str, Any]) -> Cluster | None:
    name = raw["name"]
    if not ctx.unique(p + ("name",), "cluster", name, fleet.names,
                      " (each names its directory clusters/<name>/ and its Argo CD Applications)"):
        return None
    istio_text = raw.get("istio", ctx.data["istio"])
    ipath = p + ("istio",) if "istio" in raw else ("istio",)
    version = ctx.istio(ipath, istio_text)
    if version is None:
        return None
    labels = tuple(sorted(raw["labels"].items()))
    if not raw["labels"]["wave"]:
        ctx.error(p + ("labels", "wave"), f"cluster {name!r} has an empty wave; name its rollout wave "
                  "(e.g. wave: canary)")
    for key, _ in labels:
        problem = label_key_problem(key)
        if problem:
            ctx.error(p + ("labels", key), f"label key {key!r} {problem}", key=True)
    if labels in fleet.selectors:
        ctx.error(p + ("labels",), f"cluster {name!r} has the same labels as cluster "
                  f"{fleet.selectors[labels]!r}, so Argo CD would select the same clusters for both; give "
                  "each cluster a label of its own (e.g. cluster: <name>)")
    fleet.selectors.setdefault(labels, name)
    first_error = len(ctx.errors)
    outputs = _cluster_outputs(ctx, fleet, p, raw, (name, istio_text, version))
    # What the cluster's Istio cannot render is said once, however many services it stops.
    ctx.errors[first_error:] = list(dict.fromkeys(ctx.errors[first_error:]))
    return Cluster(name, version, istio_text, labels, tuple(outputs))


def _cluster_outputs(ctx: SpecContext, fleet: _Fleet, p: Path_, raw: dict[str, Any],
                     target: tuple[str, str, tuple[int, int]]) -> list[tuple[str, OutputKind]]:
    """(service, output kind) for each service the cluster runs, each checked against its Istio."""
    name = target[0]
    ipath = p + ("istio",) if "istio" in raw else ("istio",)
    cluster_output = output_kind(raw, fleet.top_output)
    outputs: list[tuple[str, OutputKind]] = []
    for j, sname in enumerate(raw.get("services", list(fleet.services))):
        sp = p + ("services", j)
        if sname not in fleet.services:
            if sname in fleet.raw_services:
                continue  # the service itself is refused where it is declared
            guess = difflib.get_close_matches(sname, sorted(fleet.raw_services), n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else \
                f"declared: {', '.join(sorted(fleet.raw_services)) or 'none'}"
            ctx.error(sp, f"unknown service {sname!r} in cluster {name!r}; {hint}")
            continue
        if sname in dict(outputs):
            ctx.error(sp, f"service {sname!r} is listed twice for cluster {name!r}; list it once")
            continue
        service_raw = fleet.raw_services[sname]
        output = output_kind(service_raw, cluster_output)
        opath = p + ("output", "kind") if "output" in raw and "output" not in service_raw else ipath
        cluster_gates(ctx, opath, target, fleet.services[sname], output)
        outputs.append((sname, output))
    return outputs


def _idle_services(ctx: SpecContext, fleet: _Fleet, found: list[Cluster]) -> None:
    running = {name for c in found for name in c.services}
    for i, raw_service in enumerate(ctx.data.get("services", [])):
        if raw_service["name"] in fleet.services and raw_service["name"] not in running:
            ctx.warn(("services", i, "name"), f"service {raw_service['name']!r} runs in no cluster, so nothing is "
                     "rendered for it; add it to a cluster's services or remove it")


def _fleet_settings(ctx: SpecContext, fleet: bool, gitops: GitOps | None, found: list[Cluster]) -> None:
    """gitops settings that a fleet overrides, or that only a fleet can use."""
    raw_gitops = ctx.data.get("gitops") or {}
    for controller, key, why in (("argocd", "mode", "a fleet gets one RollingSync ApplicationSet"),
                                 ("argocd", "automated", "RollingSync syncs each wave itself and turns "
                                  "automated sync off"),
                                 ("flux", "mode", "a fleet gets one Kustomization per cluster")):
        if fleet and key in (raw_gitops.get(controller) or {}):
            ctx.warn(("gitops", controller, key), f"{key} has no effect with clusters: {why} "
                     "(docs/gitops.md); remove it")
    if gitops is not None and gitops.argocd is not None:
        waves = {c.wave for c in found}
        for wave, _ in gitops.argocd.max_update:
            if fleet and wave not in waves:
                ctx.error(("gitops", "argocd", "maxUpdate", wave), f"no cluster is in wave {wave!r}; "
                          f"waves: {', '.join(sorted(waves)) or 'none'}", key=True)
            elif not fleet:
                ctx.error(("gitops", "argocd", "maxUpdate"), "maxUpdate paces the waves of clusters; "
                          "the spec has no clusters: remove it or add clusters", key=True)


def cluster_gates(ctx: SpecContext, path: Path_, target: tuple[str, str, tuple[int, int]], service: Service,
                  output: OutputKind) -> None:
    """What the cluster's Istio cannot render for a service it runs, where the cluster says it."""
    cluster, istio_text, version = target
    where = f"service {service.name!r} in cluster {cluster!r} (Istio {istio_text})"
    if output == "WasmPlugin" and not istio_versions.supports(version, "WasmPlugin"):
        ctx.error(path, f"cluster {cluster!r} (Istio {istio_text}): WasmPlugin needs Istio 1.12 or later; "
                  "use output kind EnvoyFilter for this cluster or raise its istio")
    elif output == "TrafficExtension" and not istio_versions.supports(version, "TrafficExtension"):
        ctx.error(path, f"cluster {cluster!r} (Istio {istio_text}): TrafficExtension needs Istio 1.30 or "
                  "later; use output kind WasmPlugin for this cluster or raise its istio")
    elif output != "EnvoyFilter":
        if service.context == "SIDECAR_OUTBOUND" and not istio_versions.supports(version, "WasmPlugin.match"):
            ctx.error(path, f"{where}: a WasmPlugin for SIDECAR_OUTBOUND needs match.mode CLIENT (Istio "
                      "1.16); raise its istio or use output kind EnvoyFilter for this cluster")
        if any(sf.filter.fail_open for sf in service.filters) and \
                not istio_versions.supports(version, "WasmPlugin.failStrategy"):
            ctx.error(path, f"{where}: failOpen for a WasmPlugin needs failStrategy (Istio 1.19); raise "
                      "its istio or use output kind EnvoyFilter for this cluster")
    for sf in service.filters:
        f = sf.filter
        if output == "EnvoyFilter" and (f.binary.is_oci or f.delivery == "oci"):
            ctx.error(path, f"{where}: filter {f.name!r} is an image istio-agent pulls, which an "
                      "EnvoyFilter cannot ask for; set output kind WasmPlugin or TrafficExtension for "
                      "this cluster")
        if f.delivery == "imageVolume" and not istio_versions.supports(version, "injection.imageVolume"):
            ctx.error(path, f"{where}: filter {f.name!r} is mounted as an image volume, which this "
                      "Istio's injector does not know; raise its istio or use delivery oci")
