"""filters.yaml -> validated FilterSet: YAML with positions, the JSON Schema, then the meaning.

Every problem found is collected as a Finding with file:line:col and reported at once. The meaning is
checked by subject (filters, services, gateways, gitops and clusters), each module adding its findings
to one SpecContext and returning its part of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import istio_versions
from ..errors import Finding, SpecError
from ..model import DEFAULTS, FilterSet
from ..schema_errors import describe
from ..yamlio import Document
from .context import SpecContext
from .filters import filters, inspect_binaries, module_findings
from .gateways import gateways
from .gitops import clusters, gitops
from .loading import (
    load_build_targets,
    load_schema,
    parse,
    parse_valid,
    require_filters,
    schema_findings,
)
from .resources import Resources
from .services import services

__all__ = [
    "LoadedSpec",
    "load_build_targets",
    "load_schema",
    "load_spec",
    "parse",
    "parse_valid",
    "require_filters",
]


@dataclass(frozen=True)
class LoadedSpec:
    filter_set: FilterSet
    warnings: tuple[Finding, ...]
    # The parsed document, for findings that later stages place in filters.yaml.
    document: Document | None = field(default=None, repr=False, compare=False)


def _model(ctx: SpecContext, inspect: bool, out: Path | None) -> FilterSet | None:
    data = ctx.data
    istio_text: str = data["istio"]
    version = ctx.istio(("istio",), istio_text) or (1, 99)
    kubernetes = (istio_versions.parse_version(data.get("kubernetes", DEFAULTS.kubernetes))
                  or DEFAULTS.kubernetes_version)
    found = filters(ctx, version, kubernetes, inspect=inspect)
    inspection = inspect_binaries(found.to_inspect)
    try:
        resources = Resources(ctx.root, out, fleet=bool(data.get("clusters")))
        modelled = services(ctx, found, version, resources)
        gateway_list = gateways(ctx, found, version)
        delivery = gitops(ctx, data["gitops"]) if "gitops" in data else None
        fleet = clusters(ctx, modelled, delivery)
        if gateway_list and fleet:
            # A fleet's trees hold its services' filter objects; gateways have no place in them yet.
            ctx.error(("gateways",), "gateways cannot be combined with clusters yet: render the gateways "
                      "from a spec of their own, or remove clusters")
        if inspection is not None:
            module_findings(ctx, found.to_inspect, inspection.result())
    finally:
        if inspection is not None:
            inspection.cancel()  # nothing left to do once result() has run
    if ctx.errors:
        return None
    return FilterSet(ctx.spec_path, ctx.root, version, istio_text, tuple(found.by_name.values()), tuple(modelled),
                     gitops=delivery, kubernetes=kubernetes, gateways=tuple(gateway_list), clusters=tuple(fleet))


def load_spec(spec_path: Path, *, display: str | None = None, inspect: bool = True,
              out: Path | None = None) -> LoadedSpec:
    """Read, validate and model a spec. Raise SpecError with every problem found.

    `out` is the output directory, when it is not the spec's."""
    doc = parse(spec_path, display)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.finding((), f"the document must be a map with apiVersion, kind, istio, filters "
                                     f"and services, not {describe(doc.data)}")])
    schema_errors = schema_findings(doc)
    if schema_errors:
        raise SpecError(schema_errors)
    ctx = SpecContext(doc, spec_path, spec_path.parent.resolve())
    model = _model(ctx, inspect, out)
    if model is None:
        raise SpecError(ctx.errors)
    return LoadedSpec(model, tuple(sorted(ctx.warnings)), doc)
