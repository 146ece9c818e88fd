"""filters.lock: what `push` put in the registry, per filter, so `render` can pin images by digest.

The lock sits beside the spec and is committed. A pull request can edit it, so it is read strictly
(every key known, every digest well-formed) and only ever used together with the spec and the .wasm it
describes: the module's sha256 in the lock must be the sha256 of the file the spec names.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .oci import DIGEST, VARIANTS, Variant, parse_repository

LOCK_VERSION = 1
_HEX64 = re.compile(r"[a-f0-9]{64}")
_ENTRY_KEYS = {"repository", "tag", "manifestDigest", "mediaType", "moduleSha256", "variant"}


@dataclass(frozen=True)
class LockEntry:
    repository: str
    tag: str
    manifest_digest: str  # sha256:<hex> of the manifest bytes pushed
    media_type: str
    module_sha256: str  # hex sha256 of the .wasm inside
    variant: Variant

    @property
    def pinned(self) -> str:
        """The image by digest: what render writes, never the mutable tag."""
        return f"{self.repository}@{self.manifest_digest}"

    def as_dict(self) -> dict[str, str]:
        return {"repository": self.repository, "tag": self.tag, "manifestDigest": self.manifest_digest,
                "mediaType": self.media_type, "moduleSha256": self.module_sha256, "variant": self.variant}


class LockProblem(Exception):
    """The lock file cannot be used; the message says what is wrong with it."""


def lock_path(spec_path: Path) -> Path:
    return spec_path.with_suffix(".lock")


def _entry(name: str, raw: Any) -> LockEntry:
    if not isinstance(raw, dict) or set(raw) != _ENTRY_KEYS or not all(isinstance(v, str) for v in raw.values()):
        raise LockProblem(f"the entry for {name!r} must have exactly the string keys {', '.join(sorted(_ENTRY_KEYS))}")
    if parse_repository(raw["repository"]) is None:
        raise LockProblem(f"the entry for {name!r} has repository {raw['repository']!r}, not REGISTRY/PATH")
    if not DIGEST.fullmatch(raw["manifestDigest"]):
        raise LockProblem(f"the entry for {name!r} has manifestDigest {raw['manifestDigest']!r}, not sha256:<64 hex>")
    if not _HEX64.fullmatch(raw["moduleSha256"]):
        raise LockProblem(f"the entry for {name!r} has moduleSha256 {raw['moduleSha256']!r}, not 64 hex digits")
    if raw["variant"] not in VARIANTS:
        raise LockProblem(f"the entry for {name!r} has variant {raw['variant']!r}; expected compat or oci")
    return LockEntry(raw["repository"], raw["tag"], raw["manifestDigest"], raw["mediaType"], raw["moduleSha256"],
                     raw["variant"])


def parse_lock(data: bytes) -> dict[str, LockEntry]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise LockProblem(f"it is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("lockVersion") != LOCK_VERSION or not isinstance(doc.get("filters"), dict):
        raise LockProblem(f"it is not a wasm-gitops lock (lockVersion {LOCK_VERSION} and a filters map)")
    if set(doc) - {"lockVersion", "generator", "filters"}:
        raise LockProblem(f"unknown keys {', '.join(sorted(set(doc) - {'lockVersion', 'generator', 'filters'}))}")
    return {str(name): _entry(str(name), raw) for name, raw in doc["filters"].items()}


def read_lock(path: Path) -> dict[str, LockEntry] | None:
    """The lock's entries, None when there is no lock. A lock that is a link or not a file is a problem."""
    if path.is_symlink():
        raise LockProblem("it is a symbolic link; the lock must be a plain file beside the spec")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LockProblem(f"it cannot be read ({e.strerror})") from None
    return parse_lock(data)


def dumps(entries: Mapping[str, LockEntry]) -> bytes:
    doc = {"lockVersion": LOCK_VERSION, "generator": "wasm-gitops push; do not edit",
           "filters": {name: entries[name].as_dict() for name in sorted(entries)}}
    return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode("utf-8")


def write_lock(path: Path, entries: Mapping[str, LockEntry]) -> bool:
    """Replace the lock atomically (a new file renamed over the old). Returns whether it changed."""
    data = dumps(entries)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{path}: is not a plain file; wasm-gitops writes the lock only as one")
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    try:
        fd, tmp = tempfile.mkstemp(prefix=".filters.lock.", dir=path.parent)
    except OSError as e:
        raise UsageError(f"{path}: cannot write the lock ({e.strerror or e}); the images were pushed, so "
                         "fix the permissions and push again (the digests will be the same)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise UsageError(f"{path}: cannot write the lock ({e.strerror or e}); push again") from None
        raise
    return True
