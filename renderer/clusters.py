"""A spec rolled out to several clusters: what each cluster sees, and which clusters share a tree.

Two clusters share a tree when every object they would get is the same, byte for byte: a cluster is
not a shape of its own because of its name or its labels, only because its Istio version, its output
kind or the services it runs change an object. The layout that keeps one object in one place:

    base/                          the ConfigMaps of every service any cluster runs (Istio does not shape them)
    overlays/<service>/            the workload and its pod-template patch (Istio does not shape them either)
    trees/<tree>/kustomization.yaml            one shape: ../../base and its services
    trees/<tree>/<service>/        that service's filter objects as this shape renders them, over
                                   ../../../overlays/<service>
    clusters/<cluster>/wasm-filters.yaml       Flux's entry point for that cluster, path: trees/<tree>

A tree is named after the first cluster (in spec order) of its shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import objects
from .model import Cluster, FilterSet, Service
from .yamlio import dump

Obj = dict[str, Any]


@dataclass(frozen=True)
class Shape:
    tree: str  # the directory trees/<tree>/
    clusters: tuple[Cluster, ...]
    filter_set: FilterSet  # the spec as these clusters see it: their Istio, their services and outputs

    @property
    def path(self) -> str:
        return f"trees/{self.tree}"


def cluster_filter_set(fs: FilterSet, cluster: Cluster) -> FilterSet:
    """The spec as one cluster sees it: a single-target FilterSet, so every other stage is unchanged."""
    services: list[Service] = []
    by_name = {s.name: s for s in fs.services}
    for name, output in cluster.outputs:
        services.append(dataclasses.replace(by_name[name], output=output))
    return dataclasses.replace(fs, istio=cluster.istio, istio_text=cluster.istio_text, services=tuple(services),
                               clusters=(), gitops=None)


def filter_objects(fs: FilterSet, service: Service) -> list[tuple[str, Obj]]:
    """(file name, object) for each filter of the service, as fs's Istio and the service's output render it."""
    found: list[tuple[str, Obj]] = []
    for index, sf in enumerate(service.filters):
        if service.output == "WasmPlugin":
            found.append((f"{sf.filter.name}.wasmplugin.yaml", objects.wasm_plugin(fs, service, index, sf)))
        elif service.output == "TrafficExtension":
            found.append((f"{sf.filter.name}.trafficextension.yaml",
                          objects.traffic_extension(fs, service, index, sf)))
        else:
            found.append((f"{sf.filter.name}.envoyfilter.yaml", objects.envoy_filter(fs, service, index, sf)))
    return found


def _fingerprint(fs: FilterSet) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """What a tree of this view would hold, as text: equal fingerprints, equal trees."""
    return tuple((s.name, tuple((name, dump(obj)) for name, obj in filter_objects(fs, s)))
                 for s in sorted(fs.services, key=lambda s: s.name))


def shapes(fs: FilterSet) -> list[Shape]:
    """The distinct trees, in the order their first cluster appears in the spec."""
    groups: dict[Any, list[Cluster]] = {}
    views: dict[Any, FilterSet] = {}
    for cluster in fs.clusters:
        view = cluster_filter_set(fs, cluster)
        key = _fingerprint(view)
        groups.setdefault(key, []).append(cluster)
        views.setdefault(key, view)
    return [Shape(members[0].name, tuple(members), views[key]) for key, members in groups.items()]


def tree_of(found: list[Shape]) -> dict[str, Shape]:
    """Cluster name -> the shape whose tree it applies."""
    return {c.name: shape for shape in found for c in shape.clusters}


def services_in_use(fs: FilterSet) -> list[Service]:
    """The services some cluster runs, by name: the shared base/ and overlays/ hold these."""
    used = {name for c in fs.clusters for name in c.services}
    return sorted((s for s in fs.services if s.name in used), key=lambda s: s.name)


@dataclass(frozen=True)
class ClusterChange:
    """What a change to the tree does to one cluster: the files it applies that change."""

    name: str
    wave: str
    tree: str
    files: tuple[str, ...]

    @property
    def changes(self) -> bool:
        return bool(self.files)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "wave": self.wave, "tree": f"trees/{self.tree}", "changes": self.changes,
                "files": list(self.files)}


def _applies(fs: FilterSet, cluster: Cluster, tree: str, rel: str) -> bool:
    """Whether cluster (which applies trees/<tree>/) reaches the file rel of the output tree."""
    parts = rel.split("/")
    runs = set(cluster.services)
    if parts[0] == "trees":
        return len(parts) > 1 and parts[1] == tree
    if parts[0] == "clusters":
        return len(parts) > 1 and parts[1] == cluster.name
    if parts[0] == "overlays":
        return len(parts) > 1 and parts[1] in runs
    if parts[0] == "base" and len(parts) == 3:  # base/<namespace>/<filter>.configmap.yaml
        namespace, filter_name = parts[1], parts[2].removesuffix(".configmap.yaml")
        return any(s.name in runs and s.namespace == namespace and any(sf.filter.name == filter_name
                                                                         for sf in s.filters) for s in fs.services)
    return parts[0] == "base"  # base/kustomization.yaml; gitops/ and the manifest reach no cluster by themselves


def cluster_changes(fs: FilterSet, files: list[str]) -> tuple[ClusterChange, ...]:
    """Every cluster in spec order, with the changed files (added, changed or stale) it applies."""
    trees = tree_of(shapes(fs))
    return tuple(ClusterChange(c.name, c.wave, trees[c.name].tree,
                               tuple(sorted(rel for rel in files if _applies(fs, c, trees[c.name].tree, rel))))
                 for c in fs.clusters)


def changes_line(found: tuple[ClusterChange, ...]) -> str:
    """One line for check and diff: which clusters change, by wave in rollout order."""
    waves: dict[str, list[str]] = {}
    for c in found:
        if c.changes:
            waves.setdefault(c.wave, []).append(c.name)
    if not waves:
        return "clusters that change: none"
    steps = "; ".join(f"wave {wave}: {', '.join(names)}" for wave, names in waves.items())
    same = [c.name for c in found if not c.changes]
    return f"clusters that change: {steps}" + (f" (unchanged: {', '.join(same)})" if same else "")
