"""`wasm-gitops verify`: the declared tests of filters, services and gateways, through the rendered chains
in a real Envoy (the runner: renderer/verify.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import core
from ..envoy.load import EnvoyStep
from ..errors import UsageError
from ..model import DEFAULTS, Filter, FilterSet, Gateway, OutputKind, Service
from ..plan import build_plan
from ..verify import CaseResult


def _verify_targets(prepared: core.Prepared) -> list[tuple[str, FilterSet, list[tuple[str, dict[str, Any]]]]]:
    """(name suffix, the spec as one target sees it, its rendered objects): the spec itself, or with
    clusters one per distinct shape, each through the objects of its own tree."""
    from .. import clusters

    fs = prepared.spec.filter_set
    if not fs.clusters:
        return [("", fs, prepared.plan.objects)]
    found: list[tuple[str, FilterSet, list[tuple[str, dict[str, Any]]]]] = []
    for shape in clusters.shapes(fs):
        plan = build_plan(shape.filter_set, prepared.out, keep_objects=True)
        found.append((f"@{shape.tree}", shape.filter_set, plan.objects))
    return found


def _uses_filter(fs: FilterSet, f: Filter) -> bool:
    return any(sf.filter.name == f.name for s in fs.services for sf in s.filters)


def _verify_cases(fs: FilterSet, filters: list[Filter], services: list[Service], pairs: list[tuple[str, dict[str, Any]]],
                  modules: Path, suffix: str, listeners: dict[str, Any], cases: list[Any]) -> None:
    """The listeners and cases of one target; with clusters every name carries its tree (@tree)."""
    from .. import verify as runner
    from ..envoy import istio

    for f in filters:
        # The filter as the first service that loads it renders it (EnvoyFilter or WasmPlugin).
        output: OutputKind = next((s.output for s in fs.services for sf in s.filters
                                   if sf.filter.name == f.name), DEFAULTS.output_kind)
        by_config: dict[str | None, str] = {}
        for t in f.tests:
            config = t.config if t.config is not None else f.config
            if config not in by_config:
                name = by_config[config] = f"filter:{f.name}{suffix}:{len(by_config)}"
                http_filter = istio.http_filter(fs, f, config, modules, output=output)
                listeners[name] = runner.Listener(name, DEFAULTS.context, (http_filter,), f"{f.name}.test")
            cases.append(runner.Case(f.name + suffix, "filter", by_config[config], t, "trace"))
    problems: dict[str, str] = {}
    chains = istio.filter_set_chains(fs, pairs, modules, only={s.name for s in services},
                                     on_error=lambda name, e: problems.__setitem__(name, str(e)),
                                     images=_image_puller(fs))
    by_service = {c.service: c for c in chains}
    for s in services:
        name = f"service:{s.name}{suffix}"
        host = f"{s.name}.{s.namespace}.svc.cluster.local"
        chain = by_service.get(s.name)
        listeners[name] = runner.Listener(name, s.context, tuple(f.http_filter for f in chain.filters)
                                          if chain else (), host, problems.get(s.name))
        level = dict(s.proxy_log_level).get("wasm", runner.ISTIO_DEFAULT_WASM_LEVEL)
        cases += [runner.Case(s.name + suffix, "service", name, t, level) for t in s.tests]


def _gateway_cases(fs: FilterSet, gateways: list[Gateway], pairs: list[tuple[str, dict[str, Any]]], modules: Path,
                   listeners: dict[str, Any], cases: list[Any]) -> None:
    """One listener per gateway with its route table, as its control plane builds it (envoy/routes.py)."""
    from .. import verify as runner
    from ..envoy import routes
    from ..envoy.istio import ChainError

    pull = _image_puller(fs)
    # A locked image of a filter built here holds exactly its file's module (the spec stage compared the
    # lock's module sha256 with the file): that file stands in for the pull, as in a filter's own tests.
    local = {f.image.pinned: f.binary.data for f in fs.filters if f.image is not None and f.binary.path is not None}

    def images(reference: str) -> bytes:
        bare = reference.removeprefix("oci://")
        return local[bare] if bare in local else pull(reference)

    for g in gateways:
        name = f"gateway:{g.name}"
        try:
            table = routes.route_table(fs, g, pairs, modules, "upstream", images)
            listeners[name] = runner.Listener(name, "GATEWAY", table.http_filters, table.host,
                                              virtual_hosts=table.virtual_hosts)
        except ChainError as e:
            listeners[name] = runner.Listener(name, "GATEWAY", (), "gateway.local", str(e))
        cases += [runner.Case(g.name, "gateway", name, t, "info") for t in g.tests]


def _image_puller(fs: FilterSet) -> Callable[[str], bytes]:
    """Pulls the module of an image that `push` recorded in the lock (by digest, its module's sha256
    checked), with the credentials `push` uses. Any other reference is refused unpulled: verify reaches
    no registry that the spec's lock does not name."""
    pinned = {f.image.pinned: f.binary.sha256 for f in fs.filters if f.image is not None}

    def pull(reference: str) -> bytes:
        bare = reference.removeprefix("oci://")
        if bare not in pinned:
            raise UsageError("verify pulls only the images filters.lock pins (image: plus 'wasm-gitops push'); "
                             "this one is not")
        from .. import oci

        return oci.pull_pinned(bare, pinned[bare], os.environ)

    return pull


@dataclass(frozen=True)
class Verified:
    results: tuple[CaseResult, ...]  # empty: nothing declares tests

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def verify(spec_path: Path, names: tuple[str, ...] = (), *, envoy: Path | None = None,
           progress: Callable[[int, int, CaseResult], None] | None = None) -> Verified:
    """Run the declared tests of each filter, service and gateway (or of those named) in a real Envoy: a
    filter's tests through that filter alone, a service's through its whole rendered chain, a gateway's
    through its route table (envoy/routes.py)."""
    import tempfile

    from .. import verify as runner
    from ..envoy.binary import find_envoy

    # verify's own Envoy loads each chain, and a refused module or configuration fails the cases
    # that use it, with Envoy's reason: the separate load step would only stop the command earlier.
    prepared = core.prepare(spec_path, None, keep_objects=True, envoy=EnvoyStep(enabled=False))
    fs = prepared.spec.filter_set
    filters, services, gateways = _tested(fs, names, spec_path)
    if not filters and not services and not gateways:
        return Verified(())
    binary = find_envoy(envoy)
    listeners: dict[str, runner.Listener] = {}
    cases: list[runner.Case] = []
    with tempfile.TemporaryDirectory(prefix="wasm-gitops-modules-") as tmp:
        modules = Path(tmp)
        for suffix, view, pairs in _verify_targets(prepared):
            picked = {s.name for s in view.services}
            _verify_cases(view, [f for f in filters if _uses_filter(view, f)] if suffix else filters,
                          [s for s in services if s.name in picked], pairs, modules, suffix, listeners, cases)
        _gateway_cases(fs, gateways, prepared.plan.objects, modules, listeners, cases)  # no clusters with gateways
        return Verified(tuple(runner.run(binary, list(listeners.values()), cases, progress=progress)))


def _tested(fs: FilterSet, names: tuple[str, ...],
            spec_path: Path) -> tuple[list[Filter], list[Service], list[Gateway]]:
    """The filters, services and gateways with tests (of those named, when names are given)."""
    known = {f.name for f in fs.filters} | {s.name for s in fs.services} | {g.name for g in fs.gateways}
    unknown = sorted(set(names) - known)
    if unknown:
        what = "filter, service or gateway" if fs.gateways else "filter or service"
        raise UsageError(f"no {what} named {', '.join(unknown)} in {spec_path}")
    filters = [f for f in fs.filters if f.tests and (not names or f.name in names)]
    services = [s for s in fs.services if s.tests and (not names or s.name in names)]
    for f in filters:
        if f.binary.is_oci:
            raise UsageError(f"filter {f.name!r} is an OCI image; verify runs local .wasm files only")
    gateways = [g for g in fs.gateways if g.tests and (not names or g.name in names)]
    return filters, services, gateways
