"""Read the user's own kustomize resources, just enough to find the Deployment a service patches.

This is deliberately not a kustomize implementation: it follows `resources:` (and the deprecated
`bases:`) of local kustomizations and reads Deployments as written. Patches or generators in the user's
kustomization that rewrite pod labels are not applied; the tests build the real output with
`kubectl kustomize`, which is the final word.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .yamlio import SpecSyntaxError, load_all_plain

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_REMOTE_PREFIXES = ("http://", "https://", "git::", "git@", "ssh://", "file://", "github.com/",
                    "gitlab.com/", "bitbucket.org/")


def is_remote(resource: str) -> bool:
    """kustomize's remote forms: URLs, git:: and scp-like addresses, and bare hosting-site paths."""
    return resource.startswith(_REMOTE_PREFIXES) or "://" in resource


class PathProblem(Exception):
    pass


def inside(root: Path, relative: str, what: str) -> Path:
    """Resolve a user-given relative path, refusing anything that leaves root (.., absolute, symlinks)."""
    if os.path.isabs(relative) or relative.startswith("~"):
        raise PathProblem(f"{what} {relative!r} is absolute; write it relative to filters.yaml, "
                          "inside the repository")
    real_root = root.resolve()
    target = (root / relative).resolve()
    if target != real_root and real_root not in target.parents:
        raise PathProblem(f"{what} {relative!r} leads outside the repository; keep it inside the "
                          "directory of filters.yaml (symlinks included)")
    return target


@dataclass(frozen=True)
class Workload:
    name: str
    namespace: str | None
    pod_labels: tuple[tuple[str, str], ...]
    file: Path


@dataclass
class ResourceScan:
    """What a local kustomization directory contains (after following its local resources)."""

    deployments: list[Workload]
    files: set[Path]
    problems: list[str]


class WorkloadReader:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[Path, ResourceScan] = {}

    def scan(self, directory: Path) -> ResourceScan:
        directory = directory.resolve()
        if directory not in self._cache:
            scan = ResourceScan([], set(), [])
            self._cache[directory] = scan  # placed first, so a kustomization cycle ends here
            self._scan_dir(directory, scan, depth=0)
        return self._cache[directory]

    def _scan_dir(self, directory: Path, scan: ResourceScan, depth: int) -> None:
        if depth > 20:
            scan.problems.append(f"{directory}: kustomizations nested more than 20 deep")
            return
        kfile = next((directory / n for n in KUSTOMIZATION_NAMES if (directory / n).is_file()), None)
        if kfile is None:
            scan.problems.append(f"{self._rel(directory)} has no kustomization.yaml; kustomize can only "
                                 "use a directory that has one")
            return
        scan.files.add(kfile)
        docs = self._load(kfile, scan)
        kustomization = docs[0] if docs and isinstance(docs[0], dict) else {}
        entries: list[Any] = []
        for key in ("resources", "bases"):
            value = kustomization.get(key)
            if isinstance(value, list):
                entries.extend(value)
        for entry in entries:
            if not isinstance(entry, str) or is_remote(entry):
                continue
            path = (directory / entry).resolve()
            if self.root not in path.parents:
                # kustomize itself allows this; we cannot vouch for what lies outside the repository.
                continue
            if path.is_dir():
                if path in scan.files:
                    continue
                scan.files.add(path)
                self._scan_dir(path, scan, depth + 1)
            elif path.is_file():
                scan.files.add(path)
                for doc in self._load(path, scan):
                    self._collect(doc, path, scan)

    def _load(self, path: Path, scan: ResourceScan) -> list[Any]:
        try:
            return load_all_plain(path.read_text(encoding="utf-8"), self._rel(path))
        except (OSError, UnicodeDecodeError) as e:
            scan.problems.append(f"cannot read {self._rel(path)}: {e}")
        except SpecSyntaxError as e:
            scan.problems.extend(str(f) for f in e.findings)
        return []

    def _collect(self, doc: Any, path: Path, scan: ResourceScan) -> None:
        for obj in _objects(doc):
            if obj.get("kind") != "Deployment":
                continue
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            template = (obj.get("spec") or {}).get("template") if isinstance(obj.get("spec"), dict) else None
            labels: dict[str, Any] = {}
            if isinstance(template, dict) and isinstance(template.get("metadata"), dict):
                raw = template["metadata"].get("labels")
                labels = raw if isinstance(raw, dict) else {}
            scan.deployments.append(Workload(
                name=str(meta.get("name", "")),
                namespace=meta.get("namespace") if isinstance(meta.get("namespace"), str) else None,
                pod_labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
                file=path,
            ))

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def _objects(doc: Any) -> Iterator[dict[str, Any]]:
    if isinstance(doc, dict):
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                if isinstance(item, dict):
                    yield item
        else:
            yield doc
