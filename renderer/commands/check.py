"""`wasm-gitops check`: does the tree on disk equal a fresh render? Writes nothing."""

from __future__ import annotations

from pathlib import Path

from .. import core
from ..core import CheckResult
from ..envoy.load import EnvoyStep


def check(spec_path: Path, out: Path | None = None, envoy: EnvoyStep = core.ENVOY) -> CheckResult:
    return core.compare_prepared(core.prepare(spec_path, out, envoy=envoy))


__all__ = ["CheckResult", "check"]
