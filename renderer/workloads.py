"""Read the user's own kustomize resources, just enough to find the Deployment a service patches.

This is deliberately not a kustomize implementation: it follows `resources:` (and the deprecated
`bases:`) of local kustomizations and reads Deployments as written. Patches or generators in the user's
kustomization that rewrite pod labels are not applied; the tests build the real output with
`kubectl kustomize`, which is the final word.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import parallel
from .files import NotAFile, TooLarge, is_within, read_file, real_join_stat
from .yamlio import (
    SpecSyntaxError,
    compose_all,
    node_get,
    node_string_map,
    node_strings,
    node_text,
)

# The spec's own limit: a workload manifest larger than this is no manifest (fstat says so before
# any of it is read).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_REMOTE_PREFIXES = ("http://", "https://", "git::", "git@", "ssh://", "file://", "github.com/",
                    "gitlab.com/", "bitbucket.org/")


def is_remote(resource: str) -> bool:
    """kustomize's remote forms: URLs, git:: and scp-like addresses, and bare hosting-site paths."""
    return resource.startswith(_REMOTE_PREFIXES) or "://" in resource


class PathProblem(Exception):
    pass


def inside(root: Path, relative: str, what: str) -> Path:
    """Resolve a user-given relative path, refusing anything that leaves root (.., absolute, symlinks).

    `root` must already be a real path (the spec's directory, resolved once per run)."""
    return inside_stat(root, relative, what)[0]


def inside_stat(root: Path, relative: str, what: str) -> tuple[Path, int | None]:
    """inside(), and the file type (stat.S_IFMT) of what it names, None if nothing is there."""
    if os.path.isabs(relative) or relative.startswith("~"):
        raise PathProblem(f"{what} {relative!r} is absolute; write it relative to filters.yaml, "
                          "inside the repository")
    real_root = os.fspath(root)
    target, mode = real_join_stat(real_root, relative)
    if not is_within(real_root, target):
        raise PathProblem(f"{what} {relative!r} leads outside the repository; keep it inside the "
                          "directory of filters.yaml (symlinks included)")
    return Path(target), mode


@dataclass(frozen=True)
class Workload:
    name: str
    namespace: str | None
    pod_labels: tuple[tuple[str, str], ...]
    file: str


@dataclass
class ResourceScan:
    """What a local kustomization directory contains (after following its local resources)."""

    deployments: list[Workload]
    files: set[str]  # real paths of every file and directory it loads
    problems: list[str]


class WorkloadReader:
    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self._cache: dict[str, ResourceScan] = {}

    def scan(self, directory: Path | str) -> ResourceScan:
        """Scan a directory given by its real path (as `inside` returns it)."""
        key = str(directory)
        if key not in self._cache:
            scan = ResourceScan([], set(), [])
            self._cache[key] = scan  # placed first, so a kustomization cycle ends here
            self._scan_dir(key, scan, depth=0)
        return self._cache[key]

    def prefetch(self, directories: Iterable[Path | str], meanwhile: Callable[[], None] | None = None) -> None:
        """Scan many directories at once, shared with a forked child (parallel.py), so that scan()
        finds them cached. At mesh scale this is thousands of small files to read and parse.
        `meanwhile` runs in this process first, while the child has started."""
        todo = sorted({str(d) for d in directories} - self._cache.keys())
        scans, _ = parallel.split_and(self._scan_many, todo, meanwhile or parallel.nothing)
        for directory, scan in zip(todo, scans, strict=True):
            self._cache.setdefault(directory, scan)

    def _scan_many(self, directories: Sequence[str]) -> list[ResourceScan]:
        return [self.scan(d) for d in directories]

    def _scan_dir(self, directory: str, scan: ResourceScan, depth: int) -> None:
        if depth > 20:
            scan.problems.append(f"{self._rel(directory)}: kustomizations nested more than 20 deep")
            return
        kfile = None
        for name in KUSTOMIZATION_NAMES:  # kustomize's own order of preference
            kfile, mode = real_join_stat(directory, name)
            if mode == stat.S_IFREG:
                break
            if mode is not None and mode != stat.S_IFDIR:
                scan.problems.append(f"{self._rel(kfile)} is not a regular file; kustomize cannot read "
                                     "it: replace it with the kustomization")
                return
            kfile = None
        if kfile is None:
            scan.problems.append(f"{self._rel(directory)} has no kustomization.yaml; kustomize can only "
                                 "use a directory that has one")
            return
        scan.files.add(kfile)
        docs = self._load(kfile, scan)
        entries: list[str] = []
        for key in ("resources", "bases"):
            entries.extend(node_strings(node_get(docs[0] if docs else None, key)))
        for entry in entries:
            if is_remote(entry) or os.path.isabs(entry):
                continue
            path, mode = real_join_stat(directory, entry)
            if not is_within(self.root, path):
                # kustomize itself allows this; we cannot vouch for what lies outside the repository.
                continue
            if mode == stat.S_IFDIR:
                if path in scan.files:
                    continue
                scan.files.add(path)
                self._scan_dir(path, scan, depth + 1)
            elif mode == stat.S_IFREG:
                scan.files.add(path)
                for doc in self._load(path, scan, only_if="Deployment"):
                    self._collect(doc, path, scan)
            elif mode is not None:  # kustomize would block on a FIFO, or read a device forever
                scan.problems.append(f"{self._rel(path)} is not a regular file or a directory; kustomize "
                                     "cannot load it: replace it with the manifest")
            # missing: kustomize reports it when it builds; there is nothing here to read

    def _load(self, path: str, scan: ResourceScan, only_if: str = "") -> list[yaml.Node]:
        try:
            text = read_file(path, MAX_MANIFEST_BYTES).decode("utf-8")
            if only_if not in text:  # a Deployment's kind is spelled out in its text: skip the rest
                return []
            return compose_all(text, path)

        except (NotAFile, TooLarge) as e:
            scan.problems.append(f"{self._rel(path)} {e.strerror}; kustomize cannot load it: replace it "
                                 "with the manifest")
        except OSError as e:
            scan.problems.append(f"cannot read {self._rel(path)}: {e.strerror}")
        except UnicodeDecodeError as e:
            scan.problems.append(f"{self._rel(path)} is not UTF-8 text (byte {e.start}); save it as UTF-8")
        except SpecSyntaxError as e:
            # Named relative to the repository only here: computing it for every file costs ~0.1 s.
            rel = self._rel(path)
            scan.problems.extend(str(f).replace(path, rel, 1) for f in e.findings)
        return []

    def _collect(self, doc: yaml.Node, path: str, scan: ResourceScan) -> None:
        for obj in _objects(doc):
            if node_text(node_get(obj, "kind")) != "Deployment":
                continue
            meta = node_get(obj, "metadata")
            template_meta = node_get(node_get(node_get(obj, "spec"), "template"), "metadata")
            labels = node_string_map(node_get(template_meta, "labels"))
            scan.deployments.append(Workload(
                name=node_text(node_get(meta, "name")) or "",
                namespace=node_text(node_get(meta, "namespace")),
                pod_labels=tuple(sorted(labels.items())),
                file=path,
            ))

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root) if is_within(self.root, path) else path


def _objects(doc: yaml.Node) -> Iterator[yaml.Node]:
    if node_text(node_get(doc, "kind")) == "List":
        items = node_get(doc, "items")
        if isinstance(items, yaml.SequenceNode):
            yield from items.value
    else:
        yield doc
