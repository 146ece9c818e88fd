"""`wasm-gitops push`: each filter's image to its registry, the digests into the lock file beside the spec."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import publish
from ..oci import Progress, Variant


@dataclass(frozen=True)
class PushResult:
    pushed: tuple[publish.Pushed, ...]
    lock: Path
    changed: bool  # whether the lock file changed


def push(spec_path: Path, names: Iterable[str], variant: Variant, env: Mapping[str, str],
         progress: Progress | None = None) -> PushResult:
    pushed, changed = publish.push(spec_path, names, variant, env, progress)
    return PushResult(tuple(pushed), publish.lock_path(spec_path), changed)
