"""The objects of the teams' resources that leave the built tree when an overlay stops listing them."""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..output import Changes
from ..workloads import is_remote
from ..yamlio import SpecSyntaxError, load_document
from .effects import Obj, meta

# Kinds kustomize's namespace transformer leaves alone (cluster-scoped).
_CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                             "PersistentVolume", "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration",
                             "MutatingWebhookConfiguration", "APIService", "IngressClass", "RuntimeClass"})


def _kustomize_objects(directory: str) -> list[Obj] | str:
    """The objects `kubectl kustomize` builds from one local resource directory, or why it could not."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return "kubectl is not on PATH, so its objects cannot be listed"
    try:
        # No plugins, no Helm, no network beyond what the resource itself names: kustomize's defaults.
        proc = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"kubectl kustomize failed: {e}"
    if proc.returncode != 0:
        return f"kubectl kustomize failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
    # kustomize separates its objects with a bare --- line; every value inside an object is indented,
    # so the line cannot occur within one.
    found: list[Obj] = []
    for text in re.split(r"^---$", proc.stdout, flags=re.MULTILINE):
        if not text.strip():
            continue
        try:
            obj = load_document(text, directory).data
        except SpecSyntaxError as e:
            return f"kubectl kustomize printed what is not YAML: {e.findings[0].message if e.findings else e}"
        if isinstance(obj, dict):
            found.append(obj)
    return found


def leaving_resources(changes: Changes, current: Mapping[str, Obj], plan_files: Mapping[str, Obj],
                       out: Path, root: str) -> tuple[list[tuple[str, str, Obj]], list[str]]:
    """Objects of the teams' resources that leave the built tree: those an overlay no longer lists
    (all of them when the overlay itself is gone). Returns (overlay kustomization, resource, object)
    triples, and the resources that could not be listed, with why."""
    found: list[tuple[str, str, Obj]] = []
    unlisted: list[str] = []
    real_root = os.path.realpath(root)
    for file, obj in sorted(current.items()):
        if not (file.startswith("overlays/") and posixpath.basename(file) == "kustomization.yaml"):
            continue
        if file not in changes.removed and file not in changes.changed:
            continue
        old = [r for r in obj.get("resources") or [] if isinstance(r, str)]
        new_obj = plan_files.get(file)
        new = {r for r in (new_obj.get("resources") or []) if isinstance(r, str)} if new_obj else set()
        namespace = obj.get("namespace") if isinstance(obj.get("namespace"), str) else None
        overlay = posixpath.dirname(file)
        for resource in old:
            if resource in new or ("/" not in resource and resource.endswith(".yaml")):
                continue  # still there, or one of the overlay's own generated files
            if is_remote(resource):
                unlisted.append(f"{resource} (of {overlay}): remote; its objects leave the tree too")
                continue
            directory = os.path.realpath(os.path.join(out, overlay, resource))
            if not (directory == real_root or directory.startswith(real_root + os.sep)):
                unlisted.append(f"{resource} (of {overlay}): outside the repository, not read")
                continue
            objects = _kustomize_objects(directory)
            if isinstance(objects, str):
                unlisted.append(f"{resource} (of {overlay}): {objects}")
                continue
            for item in objects:
                kind = str(item.get("kind", "?"))
                fields = dict(meta(item))
                if namespace is not None and kind not in _CLUSTER_SCOPED:
                    fields["namespace"] = namespace  # what the overlay's namespace transformer did
                found.append((file, resource, {**item, "metadata": fields}))
    return found, unlisted

