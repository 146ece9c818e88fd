"""`package` and `push`: a filter's .wasm as an OCI image, on disk or in its registry, and the lock.

They run before the lock exists (push writes it), so they read only what publishing needs from the
spec: the schema, each filter's wasm file (inside the repository, a proxy-wasm module) and its image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import oci
from .errors import Finding, SpecError, UsageError
from .files import is_within
from .lockfile import LockEntry, LockProblem, lock_path, read_lock, write_lock
from .spec import parse_valid, require_filters
from .wasm import inspect_wasm
from .workloads import PathProblem, inside


@dataclass(frozen=True)
class Target:
    name: str
    wasm: Path
    module: bytes
    repository: str | None
    tag: str | None
    abi_version: str | None


def load_targets(spec_path: Path, names: Iterable[str] = (), *, need_image: bool) -> list[Target]:
    """The filters named (or all), each read and checked to be a proxy-wasm module."""
    doc = parse_valid(spec_path)
    root = spec_path.parent.resolve()
    raw_filters = doc.data["filters"]
    wanted = list(dict.fromkeys(names))
    require_filters(doc, wanted, spec_path)
    findings: list[Finding] = []
    targets: list[Target] = []
    for i, raw in enumerate(raw_filters):
        p: tuple[str | int, ...] = ("filters", i)
        if wanted and raw["name"] not in wanted:
            continue
        image = raw.get("image")
        if need_image and image is None:
            if wanted:
                findings.append(doc.finding(p + ("name",), f"filter {raw['name']!r} has no image: to push to; add "
                                            "image: {repository: REGISTRY/PATH, tag: TAG}"))
            continue
        ref = raw["wasm"]
        if ref.startswith("oci://") or "://" in ref:
            findings.append(doc.finding(p + ("wasm",), f"{ref!r} is not a local file; package and push build "
                                        "images from a .wasm in the repository"))
            continue
        try:
            path = inside(root, ref, "wasm")
            data = path.read_bytes()
        except PathProblem as e:
            findings.append(doc.finding(p + ("wasm",), str(e)))
            continue
        except OSError as e:
            findings.append(doc.finding(p + ("wasm",), f"wasm file {ref!r} cannot be read ({e.strerror}); build "
                                        "it first"))
            continue
        report = inspect_wasm(data)
        if not report.is_proxy_wasm:
            findings.append(doc.finding(p + ("wasm",), f"{ref!r} is not a proxy-wasm module; build it with a "
                                        "proxy-wasm SDK before publishing it"))
            continue
        declared = raw.get("sha256")
        if declared is not None and declared != hashlib.sha256(data).hexdigest():
            findings.append(doc.finding(p + ("sha256",), f"sha256 {declared} does not match {ref!r}; update one "
                                        "of them"))
            continue
        targets.append(Target(raw["name"], path, data, image["repository"] if image else None,
                              image["tag"] if image else None, report.abi_version))
    if findings:
        raise SpecError(findings)
    return targets


@dataclass(frozen=True)
class Packaged:
    name: str
    directory: Path
    image: oci.Image


def package(spec_path: Path, names: Iterable[str], variant: oci.Variant, out: Path | None) -> list[Packaged]:
    """An OCI image layout per filter under `out` (default build/oci beside the spec), reproducible."""
    out_dir = out if out is not None else spec_path.parent / "build" / "oci"
    if out is None and not is_within(os.path.realpath(spec_path.parent), os.path.realpath(out_dir)):
        # The default lies in the repository, which a pull request can change (a committed `build` link).
        raise UsageError(f"{out_dir}: leads to {os.path.realpath(out_dir)}, outside the repository; remove the "
                         "link or pass --out")
    done: list[Packaged] = []
    for t in load_targets(spec_path, names, need_image=False):
        image = oci.build_image(t.module, variant, t.abi_version)
        directory = out_dir / t.name
        oci.write_layout(image, directory, t.tag)
        done.append(Packaged(t.name, directory, image))
    return done


@dataclass(frozen=True)
class Pushed:
    name: str
    entry: LockEntry
    size: int


def push(spec_path: Path, names: Iterable[str], variant: oci.Variant, env: Mapping[str, str],
         progress: oci.Progress | None = None) -> tuple[list[Pushed], bool]:
    """Push each filter's image, then record all of them in the lock at once: a push that fails anywhere
    leaves the lock as it was. Returns what was pushed and whether the lock changed."""
    targets = load_targets(spec_path, names, need_image=True)
    if not targets:
        raise UsageError(f"{spec_path}: no filter has an image: section to push")
    path = lock_path(spec_path)
    try:
        entries = dict(read_lock(path) or {})
    except LockProblem as e:
        raise UsageError(f"{path}: {e}; restore it from version control (push rewrites it, never a broken "
                         "one)") from None
    pushed: list[Pushed] = []
    for t in targets:
        assert t.repository is not None and t.tag is not None
        image = oci.build_image(t.module, variant, t.abi_version)
        ref = oci.parse_reference(f"{t.repository}:{t.tag}")
        if progress is not None:
            progress(f"pushing {t.name} to {ref}")
        digest = oci.RegistryClient(ref, env, progress).push(image, t.tag)
        pushed.append(Pushed(t.name, LockEntry(t.repository, t.tag, digest, image.media_type,
                                               image.module_sha256, variant), len(t.module)))
    for p in pushed:
        entries[p.name] = p.entry
    return pushed, write_lock(path, entries)
