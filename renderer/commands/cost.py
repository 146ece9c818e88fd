"""`wasm-gitops cost`: what each service's Wasm chain costs per request in a real Envoy (renderer/cost/)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CostResult:
    report: Mapping[str, Any] | None  # None: nothing has a Wasm filter to measure
    skipped: Mapping[str, str]  # service -> why it was not measured


def cost(spec_path: Path, services: tuple[str, ...], filters: tuple[str, ...], *, rounds: int, seconds: int,
         rate: int, connections: int, envoy: Path | None) -> CostResult:
    from .. import cost as costs
    from ..cost import load

    settings = load.Settings(rounds=rounds, seconds=seconds, rate=rate, connections=connections)
    measured, skipped = costs.run(spec_path, services, filters, settings, envoy)
    return CostResult(measured, skipped)
