"""`wasm-gitops package`: each filter as a byte-reproducible OCI image layout on disk (renderer/publish.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import publish
from ..oci import Variant


@dataclass(frozen=True)
class PackageResult:
    packaged: tuple[publish.Packaged, ...]
    variant: Variant


def package(spec_path: Path, names: Iterable[str], variant: Variant, out: Path | None) -> PackageResult:
    return PackageResult(tuple(publish.package(spec_path, names, variant, out)), variant)
