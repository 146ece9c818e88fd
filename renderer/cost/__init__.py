"""`wasm-gitops cost`: what a service's Wasm chain costs each request, measured in a real Envoy.

Per distinct chain, Envoys on 127.0.0.1 serve the same listener (renderer.envoy.istio's shape for the
service's context): with the rendered chain (`wasm`), with the chain minus its Wasm filters (`none`),
when the chain's only effect on a request is adding headers, with Envoy's own `header_mutation` adding
them instead (`native`), and `none` once more in an Envoy of its own (`control`). All proxy to one
upstream Envoy that answers directly. `wrk` drives each variant at a paced rate (latency) and at
saturation (throughput, and Envoy's CPU time per request), in interleaved rounds; a comparison is
reported only when its effect is larger than its spread over the rounds and than what the control
differs from `none` by. docs/cost.md says why each choice was made and how to read the result.

chains (what is measured) -> measure (the Envoys and the rounds, with load: wrk, readings: /proc and
Envoy, probe: what a chain does) -> report (stats: what may be printed; JSON and text).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .load import Settings


def run(spec: Path, services: tuple[str, ...], filters: tuple[str, ...], settings: Settings,
        envoy_path: Path | None) -> tuple[Mapping[str, Any] | None, dict[str, str]]:
    """The cost report of the services (all, or those named) and of the filters named alone; None when
    nothing has a Wasm filter to measure. Also returns the services left out, with why."""
    from ..envoy.binary import find_envoy
    from . import chains, load, measure

    settings.check()
    envoy = find_envoy(envoy_path)
    wrk = load.find_wrk()
    with tempfile.TemporaryDirectory(prefix="wasm-gitops-modules-") as modules:
        wanted, skipped = ([], {}) if filters and not services else chains.chains_of(spec, services, Path(modules))
        # The same module directory: a filter alone that equals a service's chain is measured once.
        wanted += chains.filter_chains(spec, filters, Path(modules)) if filters else []
        if not wanted:
            return None, skipped
        return measure.run(wanted, envoy, settings, wrk=wrk, progress=measure.stderr_progress,
                           skipped=skipped), skipped
