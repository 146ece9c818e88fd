"""Read the user's own kustomize resources, just enough to find the Deployment a service patches.

What counts is what kustomize builds, not what the files say. When every kustomization involved only
lists `resources:` (and the deprecated `bases:`), the build is the files as written, so they are read
directly (thousands per render at mesh scale, no process started). A kustomization with anything else
(patches, labels, commonLabels, namespace, namePrefix, generators, components, helmCharts, ...) can
change the Deployment's name, namespace or pod labels: that directory is built with the real
`kubectl kustomize`, offline, several at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import parallel
from .files import NotAFile, TooLarge, is_within, read_file, real_join_stat
from .yamlio import (
    SpecSyntaxError,
    compose_all,
    decode_utf8,
    dump,
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


# Keys of a kustomization that leave its build equal to its resources as written; any other key
# may transform them, and sends the directory to the real kustomize.
_PLAIN_KEYS = frozenset({"apiVersion", "kind", "metadata", "resources", "bases"})
KUSTOMIZE_TIMEOUT = 60.0
# kustomize processes at once, and batches a build is split into (docs/performance.md).
KUSTOMIZE_JOBS = 2


@dataclass
class ResourceScan:
    """What a local kustomization directory contains (after following its local resources)."""

    deployments: list[Workload]
    files: set[str]  # real paths of every file and directory it loads
    problems: list[str]
    transformed: str = ""  # a kustomization (relative path) with a transformer: build with kustomize
    remote: list[str] = field(default_factory=list)  # remote bases named by its kustomizations
    built: bool = False


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
        scan = self._cache[key]
        if scan.transformed and not scan.built:
            self._build([key])
        return scan

    def prefetch(self, directories: Iterable[Path | str]) -> None:
        """Scan many directories at once, so that scan() finds them cached, and build every one that
        transforms its resources with one batch of kustomize runs instead of one run at a time. At mesh
        scale this is thousands of small files to read and parse: the two cores share them."""
        todo = sorted({str(d) for d in directories} - self._cache.keys())
        for directory, scan in zip(todo, parallel.map_chunks(self._scan_many, todo), strict=True):
            self._cache.setdefault(directory, scan)
        self._build([d for d in todo if self._cache[d].transformed and not self._cache[d].built])

    def _scan_many(self, directories: Sequence[str]) -> list[ResourceScan]:
        # No kustomize builds here: they start from this process, all at once, whichever core read the
        # directory (a child's scans come back as results; its cache dies with it).
        out = []
        for key in directories:
            if key not in self._cache:
                scan = ResourceScan([], set(), [])
                self._cache[key] = scan
                self._scan_dir(key, scan, depth=0)
            out.append(self._cache[key])
        return out

    def _build(self, directories: Sequence[str]) -> None:
        """Replace what the files say by what kustomize builds, for each directory that transforms."""
        todo = []
        for key in directories:
            scan = self._cache[key]
            scan.built = True
            if scan.problems:
                continue
            if scan.remote:
                scan.problems.append(
                    f"{scan.transformed} transforms its resources, so wasm-gitops builds it with kustomize "
                    f"to read the Deployment, offline, and it names the remote base {scan.remote[0]!r}: "
                    "vendor that base into the repository")
                continue
            todo.append(key)
        for key, (objects, error) in zip(todo, build_many(todo), strict=True):
            scan = self._cache[key]
            if error is not None:
                scan.problems.append(error.replace(self.root + "/", ""))
                continue
            scan.deployments = []
            for obj in objects:
                self._collect(obj, key, scan)

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
        top = docs[0] if docs else None
        if isinstance(top, yaml.MappingNode) and not scan.transformed:
            if any(isinstance(k, yaml.ScalarNode) and k.value not in _PLAIN_KEYS for k, _ in top.value):
                scan.transformed = self._rel(kfile)
        entries: list[str] = []
        for key in ("resources", "bases", "components"):
            entries.extend(node_strings(node_get(top, key)))
        for entry in entries:
            if is_remote(entry):
                scan.remote.append(entry)
                continue
            if os.path.isabs(entry):
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
            text = decode_utf8(read_file(path, MAX_MANIFEST_BYTES), path)
            if only_if not in text:  # a Deployment's kind is spelled out in its text: skip the rest
                return []
            return compose_all(text, path)

        except (NotAFile, TooLarge) as e:
            scan.problems.append(f"{self._rel(path)} {e.strerror}; kustomize cannot load it: replace it "
                                 "with the manifest")
        except OSError as e:
            scan.problems.append(f"cannot read {self._rel(path)}: {e.strerror}")
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


def kustomize_command() -> list[str] | None:
    """kubectl's embedded kustomize (v5 since kubectl 1.27), or a standalone kustomize."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize"]
    standalone = shutil.which("kustomize")
    return [standalone, "build"] if standalone is not None else None


_KLOG_ONE_LINE = re.compile(r'err=("(?:[^"\\]|\\.)*")\s*$')


def kustomize_error(stderr: str) -> str:
    """kustomize's error as one line. kubectl logs it through klog, as `err="..."` (a Go-quoted
    string) or as `err=<` and indented lines up to ` >`; a standalone kustomize prints `Error: ...`."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        one = _KLOG_ONE_LINE.search(line)
        if one:
            try:
                text = str(json.loads(one.group(1)))
            except ValueError:
                text = one.group(1)[1:-1]
            break
        if line.rstrip().endswith("err=<"):
            block = []
            for more in lines[i + 1:]:
                if more.strip() == ">":
                    break
                block.append(more.strip())
            text = " ".join(part for part in block if part)
            break
    else:
        text = next((line.strip() for line in lines if line.strip()), "no error message")
    text = " ".join(text.removeprefix("Error: ").removeprefix("error: ").split())
    return text if len(text) <= 400 else text[:397] + "..."


_BATCH_ANNOTATION = "wasm-gitops.io/built-from"


def build_many(directories: Sequence[str]) -> list[tuple[list[yaml.Node], str | None]]:
    """What `kubectl kustomize DIR` builds for each directory: (its objects, None), or ([], the
    first line of kustomize's error).

    One kubectl start costs ~0.15 s of CPU (0.3-0.5 s of wall time here: kubectl is a dispatcher that
    starts the real one), so a mesh where a hundred services patch their workloads cannot pay one
    process per directory. The directories are built in a few batches instead, each one kustomize
    run over a temporary kustomization that includes each directory through a wrapper adding only an
    annotation naming it; the objects are then sorted back by that annotation. A batch that fails
    (one broken directory, or objects two directories both define) is halved and built again, down to
    single directories, so each error is told at its own resource. The load restrictor stays kustomize's default
    (files under each kustomization's root); plugins and Helm stay off; remote bases are refused
    before this is called."""
    if not directories:
        return []
    command = kustomize_command()
    if command is None:
        return [([], "it transforms its resources (patches, labels, ...), so wasm-gitops builds it with "
                 "kustomize to read the Deployment, and neither kubectl nor kustomize is on PATH: install "
                 "kubectl")] * len(directories)
    results: list[tuple[list[yaml.Node], str | None] | None] = [None] * len(directories)
    count = min(KUSTOMIZE_JOBS, max(1, len(directories) // 8))
    pending = [list(range(len(directories)))[k::count] for k in range(count)]
    with tempfile.TemporaryDirectory(prefix="wasm-gitops-kustomize-") as scratch:
        round_ = 0
        while pending:
            singles = [b for b in pending if len(b) == 1]
            batches = [b for b in pending if len(b) > 1]
            runs = [[*command, directories[b[0]]] for b in singles]
            runs += [[*command, _batch_root(scratch, f"{round_}-{n}", [directories[i] for i in b])]
                     for n, b in enumerate(batches)]
            round_ += 1
            pending = []
            for batch, (out, err) in zip(singles + batches, _run_all(runs), strict=True):
                if len(batch) == 1:
                    results[batch[0]] = _single(out, err, directories[batch[0]])
                    continue
                placed = None if err is not None else _sort_batch(out, len(batch))
                if placed is None:  # halve it until the culprits stand alone, each with its own error
                    half = len(batch) // 2
                    pending += [batch[:half], batch[half:]]
                    continue
                for i, objects in zip(batch, placed, strict=True):
                    results[i] = (objects, None)
    return [r if r is not None else ([], "kustomize built nothing for it") for r in results]


def _single(out: str, err: str | None, directory: str) -> tuple[list[yaml.Node], str | None]:
    if err is not None:
        return [], err
    try:
        return [obj for doc in compose_all(out, directory) for obj in _objects(doc)], None
    except SpecSyntaxError as e:
        return [], f"cannot read what kustomize built: {e.findings[0].message}"


def _batch_root(scratch: str, name: str, directories: Sequence[str]) -> str:
    """A kustomization under `scratch` that includes each directory through a wrapper of its own."""
    root = os.path.join(scratch, name)
    wrappers = []
    for k, directory in enumerate(directories):
        wrapper = os.path.join(root, str(k))
        os.makedirs(wrapper)
        # kustomize takes a directory resource relative to the kustomization, never absolute.
        _write(os.path.join(wrapper, "kustomization.yaml"), dump({
            "resources": [os.path.relpath(directory, wrapper)],
            "commonAnnotations": {_BATCH_ANNOTATION: str(k)}}))
        wrappers.append(str(k))
    _write(os.path.join(root, "kustomization.yaml"), dump({"resources": wrappers}))
    return root


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _sort_batch(output: str, count: int) -> list[list[yaml.Node]] | None:
    """A batch's objects, per directory by the wrapper's annotation; None if one cannot be placed."""
    try:
        docs = compose_all(output, "kustomize")
    except SpecSyntaxError:
        return None
    placed: list[list[yaml.Node]] = [[] for _ in range(count)]
    for doc in docs:
        for obj in _objects(doc):
            index = node_text(node_get(node_get(node_get(obj, "metadata"), "annotations"), _BATCH_ANNOTATION))
            if index is None or not index.isdigit() or int(index) >= count:
                return None
            placed[int(index)].append(obj)
    return placed


def _run_all(commands: Sequence[list[str]]) -> list[tuple[str, str | None]]:
    """Run the commands KUSTOMIZE_JOBS at a time: (stdout, None), or ("", kustomize's error line)."""
    results: list[tuple[str, str | None]] = [("", None)] * len(commands)
    running: list[tuple[int, subprocess.Popen[bytes]]] = []
    queue = list(enumerate(commands))
    queue.reverse()

    def finish(index: int, proc: subprocess.Popen[bytes]) -> None:
        try:
            out, err = proc.communicate(timeout=KUSTOMIZE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            results[index] = ("", f"kustomize did not finish in {KUSTOMIZE_TIMEOUT:.0f} s")
            return
        if proc.returncode != 0:
            results[index] = ("", f"kustomize cannot build it: {kustomize_error(err.decode('utf-8', 'replace'))}")
            return
        results[index] = (out.decode("utf-8", "replace"), None)

    try:
        while queue or running:
            while queue and len(running) < KUSTOMIZE_JOBS:
                index, command = queue.pop()
                try:
                    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE)
                except OSError as e:
                    results[index] = ("", f"cannot run kustomize: {e.strerror}")
                    continue
                running.append((index, proc))
            if running:
                index, proc = running.pop(0)
                finish(index, proc)
    finally:
        for _, proc in running:  # interrupted (^C): leave no build behind
            proc.kill()
            proc.wait()
    return results
