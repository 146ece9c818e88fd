"""FilterSet -> the output tree, in memory: every file's path and bytes, and the objects in it."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import gitops, objects
from .model import Filter, FilterSet
from .workloads import is_remote
from .yamlio import GENERATED_HEADER, dump

MANIFEST = ".wasm-gitops-manifest.json"


@dataclass
class Plan:
    files: dict[str, bytes] = field(default_factory=dict)  # posix path relative to out -> content
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file, object)

    def add(self, path: str, header: str, obj: dict[str, Any]) -> None:
        self.files[path] = (header + dump(obj)).encode("utf-8")
        self.objects.append((path, obj))


def _rel(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def spec_label(fs: FilterSet, out: Path) -> str:
    """How the header names the spec: relative to the output directory when it is inside it."""
    try:
        return fs.spec_path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return fs.spec_path.name


def build_plan(fs: FilterSet, out: Path) -> Plan:
    plan = Plan()
    header = GENERATED_HEADER.format(spec=spec_label(fs, out))
    out = out.resolve()

    # base/: one ConfigMap per (namespace, filter) in use; each binary encoded once.
    encoded: dict[str, str] = {}
    used: dict[tuple[str, str], Filter] = {}
    for service in fs.services:
        for sf in service.filters:
            if not sf.filter.binary.is_oci:
                used[(service.namespace, sf.filter.name)] = sf.filter
    base_resources: list[str] = []
    for (namespace, name), f in sorted(used.items()):
        if name not in encoded:
            encoded[name] = objects.encode(f.binary.data)
        rel = f"{namespace}/{name}.configmap.yaml"
        plan.add(f"base/{rel}", header, objects.configmap(f, namespace, encoded[name]))
        base_resources.append(rel)
    plan.add("base/kustomization.yaml", header, objects.kustomization(base_resources))

    # overlays/<service>/: the workload's resources, its filters' objects, and the annotation patch.
    overlay_dirs: list[str] = []
    for service in sorted(fs.services, key=lambda s: s.name):
        odir = f"overlays/{service.name}"
        resources = [r if is_remote(r) else _rel(fs.root / r, out / odir) for r in service.resources]
        for index, sf in enumerate(service.filters):
            fname = f"{sf.filter.name}.envoyfilter.yaml"
            if service.output == "WasmPlugin":
                fname = f"{sf.filter.name}.wasmplugin.yaml"
                obj = objects.wasm_plugin(fs, service, index, sf)
            else:
                obj = objects.envoy_filter(fs, service, index, sf)
            plan.add(f"{odir}/{fname}", header, obj)
            resources.append(fname)
        patches = []
        patch = objects.deployment_patch(service)
        if patch["spec"]["template"]["metadata"]["annotations"]:
            plan.add(f"{odir}/deployment-patch.yaml", header, patch)
            patches.append(objects.patch_entry("deployment-patch.yaml", service))
        plan.add(f"{odir}/kustomization.yaml", header,
                 objects.kustomization(resources, namespace=service.namespace, patches=patches))
        overlay_dirs.append(odir)

    plan.add("kustomization.yaml", header, objects.kustomization(["base", *overlay_dirs]))
    for rel, obj in gitops.controller_objects(fs, out):  # beside the root, never in it
        plan.add(rel, header, obj)
    plan.files[MANIFEST] = manifest_bytes(plan.files)
    return plan


def manifest_bytes(files: dict[str, bytes]) -> bytes:
    """The list of generated files and their hashes: what the tool owns, and how it left each one."""
    listing = {p: hashlib.sha256(c).hexdigest() for p, c in sorted(files.items()) if p != MANIFEST}
    doc = {"generator": "wasm-gitops", "note": "Files wasm-gitops generated here; it removes or "
           "overwrites no other file.", "files": listing}
    return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8")
