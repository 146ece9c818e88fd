"""FilterSet -> the output tree, in memory: every file's path and bytes, and the objects in it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import clusters, gateway_objects, gitops, objects, parallel
from .conformance import OutputProblem, validate_objects, warm_up
from .model import Filter, FilterSet, Gateway, Service
from .workloads import is_remote
from .yamlio import GENERATED_HEADER, dump

MANIFEST = ".wasm-gitops-manifest.json"


@dataclass
class Plan:
    files: dict[str, bytes] = field(default_factory=dict)  # posix path relative to out -> content
    # (file, object) pairs, kept only when asked for (the object-level diff reads them).
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # What output validation found wrong with any object: a bug in wasm-gitops, never written.
    problems: list[OutputProblem] = field(default_factory=list)


@dataclass
class _Part:
    """Some of the plan's files, their objects, and what validating those objects found."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    problems: list[OutputProblem] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)  # sha256 of each file, for the manifest

    def add(self, path: str, header: str, obj: dict[str, Any]) -> None:
        content = (header + dump(obj)).encode("utf-8")
        self.files.append((path, content))
        self.objects.append((path, obj))
        # Hashed here, where the part is built (in either process), not in one pass at the end.
        self.digests.append(hashlib.sha256(content).hexdigest())

    def validated(self, keep_objects: bool) -> _Part:
        self.problems = validate_objects(self.objects)
        if not keep_objects:
            self.objects = []
        return self


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def spec_label(fs: FilterSet, out: Path) -> str:
    """How the header names the spec: relative to the output directory when it is inside it."""
    try:
        return fs.spec_path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return fs.spec_path.name


def build_plan(fs: FilterSet, out: Path, *, keep_objects: bool = False) -> Plan:
    """Every output file in memory, each object validated. The overlays, most of the work at mesh
    scale, are built and validated per service, some of them in a forked child (parallel.py)."""
    header = GENERATED_HEADER.format(spec=spec_label(fs, out))
    out = out.resolve()
    if fs.clusters:
        parts = _fleet(fs, out, header, keep_objects)
    else:
        services = sorted(fs.services, key=lambda s: s.name)
        overlays = _Overlays(fs, out, header, keep_objects)
        # Compiled once here, before the fork, so that the child inherits the validators.
        warm_up()
        # base/ (100 ConfigMaps of 270 KB at mesh scale) is one more item of the split (None), built by
        # whichever process takes it while the other goes on with the overlays.
        base, *built = parallel.map_chunks(overlays.build_with_base, [None, *services])
        gateways = sorted(fs.gateways, key=lambda g: g.name)
        overlay_dirs = sorted([f"overlays/{s.name}" for s in services] + [f"overlays/{g.name}" for g in gateways])
        parts = [base, *built, *(_gateway(fs, g, header).validated(keep_objects) for g in gateways),
                 _root(fs, out, header, overlay_dirs).validated(keep_objects)]
    plan = Plan()
    digests: dict[str, str] = {}
    for part in parts:
        plan.files.update(part.files)
        plan.objects.extend(part.objects)
        plan.problems.extend(part.problems)
        digests.update(zip((path for path, _ in part.files), part.digests, strict=True))
    plan.files[MANIFEST] = manifest_bytes(digests)
    return plan


def _base(fs: FilterSet, header: str) -> _Part:
    """base/: one ConfigMap per (namespace, filter) in use; each binary encoded once."""
    part = _Part()
    encoded: dict[str, str] = {}
    used: dict[tuple[str, str], Filter] = {}
    for service in fs.services:
        for sf in service.filters:
            if sf.filter.in_configmap:
                used[(service.namespace, sf.filter.name)] = sf.filter
    base_resources: list[str] = []
    for (namespace, name), f in sorted(used.items()):
        if name not in encoded:
            encoded[name] = objects.encode(f.binary.data)
        rel = f"{namespace}/{name}.configmap.yaml"
        part.add(f"base/{rel}", header, objects.configmap(f, namespace, encoded[name]))
        base_resources.append(rel)
    part.add("base/kustomization.yaml", header, objects.kustomization(base_resources))
    return part


class _Overlays:
    """overlays/<service>/: the workload's resources, its filters' objects, and the annotation patch."""

    def __init__(self, fs: FilterSet, out: Path, header: str, keep_objects: bool, *,
                 with_filters: bool = True) -> None:
        self.fs, self.header, self.keep_objects = fs, header, keep_objects
        # Without filters (a spec with clusters): the workload and its patch only, which every
        # cluster's tree shares; the filter objects, shaped by each cluster's Istio, live in the trees.
        self.with_filters = with_filters
        # Every overlay sits at the same depth, so one relpath serves them all (a relpath per
        # service cost ~50 ms at 1,000 services).
        self.up_to_root = os.path.relpath(fs.root, out / "overlays" / "_")
        self.out = out

    def build(self, services: Sequence[Service]) -> list[_Part]:
        return [self.overlay(service).validated(self.keep_objects) for service in services]

    def build_with_base(self, items: Sequence[Service | None]) -> list[_Part]:
        """build(), where None stands for base/."""
        return [(_base(self.fs, self.header) if item is None else self.overlay(item)).validated(self.keep_objects)
                for item in items]

    def resource(self, service_dir: str, resource: str) -> str:
        if is_remote(resource):
            return resource
        if posixpath.normpath(resource).startswith(".."):  # leaves the root and comes back in
            return _rel(self.fs.root / resource, self.out / service_dir)
        return posixpath.normpath(posixpath.join(self.up_to_root, resource))

    def overlay(self, service: Service) -> _Part:
        part = _Part()
        odir = f"overlays/{service.name}"
        resources = [self.resource(odir, r) for r in service.resources]
        for fname, obj in (clusters.filter_objects(self.fs, service) if self.with_filters else []):
            part.add(f"{odir}/{fname}", self.header, obj)
            resources.append(fname)
        patches = []
        patch = objects.deployment_patch(service)
        if patch["spec"]["template"]["metadata"]["annotations"]:
            part.add(f"{odir}/deployment-patch.yaml", self.header, patch)
            patches.append(objects.patch_entry("deployment-patch.yaml", service))
        part.add(f"{odir}/kustomization.yaml", self.header,
                 objects.kustomization(resources, namespace=service.namespace, patches=patches))
        return part


def _gateway(fs: FilterSet, gateway: Gateway, header: str) -> _Part:
    """overlays/<gateway>/: the gateway's filter objects, in its namespace. Nothing of the gateway
    itself: its control plane installs and runs it."""
    part = _Part()
    gdir = f"overlays/{gateway.name}"
    resources = []
    for fname, obj in _gateway_objects(fs, gateway):
        part.add(f"{gdir}/{fname}", header, obj)
        resources.append(fname)
    part.add(f"{gdir}/kustomization.yaml", header, objects.kustomization(resources, namespace=gateway.namespace))
    return part


def _gateway_objects(fs: FilterSet, gateway: Gateway) -> list[tuple[str, dict[str, Any]]]:
    if gateway.control_plane == "istio":
        return gateway_objects.istio_gateway_objects(fs, gateway)
    if gateway.control_plane == "envoy-gateway":
        return gateway_objects.envoy_extension_policies(gateway)
    return gateway_objects.higress_wasm_plugins(gateway)


def _root(fs: FilterSet, out: Path, header: str, overlay_dirs: list[str]) -> _Part:
    part = _Part()
    part.add("kustomization.yaml", header, objects.kustomization(["base", *overlay_dirs]))
    for rel, obj in gitops.controller_objects(fs, out):  # beside the root, never in it
        part.add(rel, header, obj)
    return part


def _fleet(fs: FilterSet, out: Path, header: str, keep_objects: bool) -> list[_Part]:
    """A spec with clusters: the shared base/ and overlays/, one tree per shape (renderer/clusters.py)."""
    found = clusters.shapes(fs)
    used = clusters.services_in_use(fs)
    shared = dataclasses.replace(fs, services=tuple(used))
    parts = [_base(shared, header).validated(keep_objects),
             *_Overlays(fs, out, header, keep_objects, with_filters=False).build(used)]
    for shape in found:
        part = _Part()
        services = sorted(shape.filter_set.services, key=lambda s: s.name)
        part.add(f"{shape.path}/kustomization.yaml", header,
                 objects.kustomization(["../../base", *(s.name for s in services)]))
        for service in services:
            sdir = f"{shape.path}/{service.name}"
            resources = [f"../../../overlays/{service.name}"]
            for fname, obj in clusters.filter_objects(shape.filter_set, service):
                part.add(f"{sdir}/{fname}", header, obj)
                resources.append(fname)
            part.add(f"{sdir}/kustomization.yaml", header,
                     objects.kustomization(resources, namespace=service.namespace))
        parts.append(part.validated(keep_objects))
    controllers = _Part()
    for rel, obj in gitops.controller_objects(fs, out, found):
        controllers.add(rel, header, obj)
    parts.append(controllers.validated(keep_objects))
    return parts


def manifest_bytes(digests: dict[str, str]) -> bytes:
    """The list of generated files and their hashes: what the tool owns, and how it left each one."""
    listing = {p: digests[p] for p in sorted(digests) if p != MANIFEST}
    doc = {"generator": "wasm-gitops", "note": "Files wasm-gitops generated here; it removes or "
           "overwrites no other file.", "files": listing}
    return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8")
