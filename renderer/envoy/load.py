"""The Envoy step of validate, render, check and diff: every distinct filter configuration of the spec,
loaded by a real `envoy --mode validate`, and what Envoy refuses reported at its place in filters.yaml.

What is loaded is what the rendered objects make a sidecar load (translated by renderer.envoy.istio),
one HTTP filter per distinct configuration. Distinct means distinct Envoy config, with the plugin's name
left out (it only names the plugin in logs and stats): 1,000 services sharing 5 filters are 5 plugins in
one bootstrap, each in a listener of its own, so a failure names its listener.

Envoy stops at the first filter it cannot create, so the step runs again without what failed until every
problem is known. A module Envoy refuses is refused however it is configured: every configuration of
that filter leaves the next run at once. `fail_open` and `failure_policy` are left out of the check: they
decide what a sidecar does when a running VM fails, not whether the filter loads (Envoy 1.40 refuses a
plugin that cannot load either way, measured), and the deprecated `fail_open` would add a warning of its
own to the lines a refusal is explained with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Finding, RenderBug, SpecError, UsageError
from ..model import DEFAULTS, Context, FilterSet, OutputKind
from ..spec import LoadedSpec
from ..yamlio import Document
from .refusal import Failure, failure_of

WASM_FILTER = "envoy.filters.http.wasm"
LISTENER_PREFIX = "load-"
# Seconds for one `envoy --mode validate`: V8 compiles a 1 MiB module in well under a second; what takes
# longer is a module that never returns from _start or proxy_on_configure.
LOAD_TIMEOUT = 60.0


@dataclass(frozen=True)
class EnvoyStep:
    """What the command line asked of the step: run it (the default) and with which Envoy."""

    enabled: bool = True
    envoy: Path | None = None  # --envoy PATH; None: the usual lookup (renderer.envoy.binary)


@dataclass(frozen=True)
class Site:
    """One use of a filter in the spec: services[service_index].filters[entry_index] (-1 and -1: the
    filter itself, which no service uses)."""

    filter_index: int
    filter_name: str
    service_index: int
    service_name: str
    entry_index: int
    per_service_config: bool  # the entry carries its own config:, which is then what a refusal points at


@dataclass
class Candidate:
    """One distinct HTTP filter configuration, and every place in the spec that produces it."""

    key: str
    http_filter: dict[str, Any]
    context: Context  # of the first service that loads it: the listener it is tried in
    sites: list[Site] = field(default_factory=list)

    @property
    def filter_name(self) -> str:
        return self.sites[0].filter_name


@dataclass(frozen=True)
class EnvoyLoad:
    """What the step did: how many distinct configurations Envoy loaded, in how many runs, and what it
    could not try (warnings that say which filter and why)."""

    loaded: int
    runs: int
    notes: tuple[Finding, ...] = ()


# ------------------------------------------------------------------------------------ the spec's uses

def sites(fs: FilterSet) -> Iterator[Site]:
    """Every (service, filter) of a valid spec, with the indexes of its entries in the document.

    A valid spec's model keeps the document's order: filters and services have unique names and a
    service's entries all resolve, so index i of the model is index i of the YAML."""
    filter_index = {f.name: k for k, f in enumerate(fs.filters)}
    for i, service in enumerate(fs.services):
        for j, sf in enumerate(service.filters):
            yield Site(filter_index[sf.filter.name], sf.filter.name, i, service.name, j, sf.own_config)


def canonical_key(http_filter: dict[str, Any]) -> str:
    """The identity of an HTTP filter for loading: its config with the plugin's name left out."""
    value = json.loads(json.dumps(http_filter))
    plugin = value.get("typed_config", {}).get("config")
    if isinstance(plugin, dict):
        plugin.pop("name", None)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def for_loading(http_filter: dict[str, Any], name: str) -> dict[str, Any]:
    """The HTTP filter as the load check runs it: the plugin named after its listener, without the
    settings of a running VM's failure (fail_open, failure_policy)."""
    value: dict[str, Any] = json.loads(json.dumps(http_filter))
    plugin = value.get("typed_config", {}).get("config")
    if isinstance(plugin, dict):
        plugin["name"] = name
        plugin.pop("fail_open", None)
        plugin.pop("failure_policy", None)
    return value


# ------------------------------------------------------------------------------------ findings

def refusal_findings(doc: Document, fs: FilterSet, candidate: Candidate, failure: Failure,
                     version: str) -> list[Finding]:
    """One finding per place in the spec that Envoy's refusal is about."""
    reason = "; ".join(failure.reasons)
    out: list[Finding] = []
    if failure.module:
        k = candidate.sites[0].filter_index
        out.append(doc.finding(("filters", k, "wasm"), f"Envoy {version} cannot load the module of filter "
                               f"{candidate.filter_name!r}: {reason}; fix the module (or rebuild it with a "
                               "current proxy-wasm SDK)"))
        return out
    for site in candidate.sites:
        if site.per_service_config:
            out.append(doc.finding(("services", site.service_index, "filters", site.entry_index, "config"),
                                   f"Envoy {version} refuses filter {site.filter_name!r} with this configuration "
                                   f"(service {site.service_name!r}): {reason}; fix the configuration"))
        else:
            f = fs.filters[site.filter_index]
            path: tuple[str | int, ...] = ("filters", site.filter_index, "config" if f.config is not None else "name")
            what = "its configuration" if f.config is not None else "no configuration"
            out.append(doc.finding(path, f"Envoy {version} refuses filter {site.filter_name!r} with {what}: "
                                   f"{reason}; fix the configuration"))
    return out


@dataclass(frozen=True)
class Outcome:
    """The step's answer as data (it may travel back from a helper process): what loaded, or what to
    raise."""

    load: EnvoyLoad | None = None
    refused: tuple[Finding, ...] = ()  # SpecError: Envoy refused these (with the spec's warnings)
    usage: str = ""  # UsageError: no Envoy, or the step cannot write its files
    bug: str = ""  # RenderBug


class Loading:
    """The step, started: it runs in a helper process (renderer.parallel) while the caller builds the
    plan, and result() collects it. This process owns the step's temporary directory, so it is removed
    however the helper ends; cancel() (or result()) must be called."""

    def __init__(self, loaded: LoadedSpec, step: EnvoyStep) -> None:
        from .. import parallel

        self._enabled = step.enabled
        self._tmp: str | None = None
        self._early: Outcome | None = None
        self._pending: parallel.Pending[Outcome] | None = None
        if not step.enabled:
            return
        try:
            self._tmp = _workdir()
        except OSError as e:
            self._early = Outcome(usage=_io_problem(e))
            return
        workdir = Path(self._tmp)
        parent = os.getpid()
        self._pending = parallel.submit(lambda: _outcome(loaded, step, workdir, helper_of=parent))

    def result(self) -> EnvoyLoad | None:
        if not self._enabled:
            return None
        try:
            outcome = self._early if self._pending is None else self._pending.result()
        finally:
            self.cancel()
        assert outcome is not None
        return _unwrap(outcome)

    def cancel(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()  # reaps the helper; its Envoy dies with it (PR_SET_PDEATHSIG)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(loaded: LoadedSpec, step: EnvoyStep) -> EnvoyLoad | None:
    """The step, start to end: None when it is turned off; raises SpecError with every refusal found."""
    loading = Loading(loaded, step)
    try:
        return loading.result()
    finally:
        loading.cancel()


def _unwrap(outcome: Outcome) -> EnvoyLoad | None:
    if outcome.bug:
        raise RenderBug(outcome.bug)
    if outcome.usage:
        raise UsageError(outcome.usage)
    if outcome.refused:
        raise SpecError(outcome.refused)
    return outcome.load


TMP_PREFIX = "wasm-gitops-envoy-"


def _workdir() -> str:
    """A new directory for the step's files, named after this process: a run that is killed (SIGKILL
    gives no chance to clean up) leaves its directory behind, and the next run removes it."""
    root = tempfile.gettempdir()
    _sweep(root)
    return tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=root)


def _sweep(root: str) -> None:
    """Remove the step directories of processes that no longer exist: ours (same user), real directories
    (never a link someone put there), and never one of a live process."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        pid, dash, _ = name.removeprefix(TMP_PREFIX).partition("-")
        if not name.startswith(TMP_PREFIX) or not dash or not pid.isdigit() or _alive(int(pid)):
            continue
        path = os.path.join(root, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def _io_problem(e: OSError) -> str:
    where = f" at {e.filename}" if e.filename else ""
    return (f"the Envoy step cannot write or run its files{where} ({e.strerror or e}); free space or point "
            "TMPDIR elsewhere, or skip the step with --no-envoy")


def _outcome(loaded: LoadedSpec, step: EnvoyStep, workdir: Path, *, helper_of: int = 0) -> Outcome:
    """Everything a user can be told is returned as data; only a bug of ours raises.

    In a helper process (not in helper_of itself, which computes it when the helper fails), the helper
    and so its Envoy die with the command: nothing outlives a command that is killed."""
    from ..errors import WasmGitopsError

    if helper_of and os.getpid() != helper_of:
        from .process import _die_with_parent

        _die_with_parent()
        if os.getppid() != helper_of:  # the command died before the line above took effect
            os._exit(1)

    doc = loaded.document
    if doc is None:
        return Outcome(bug="the Envoy step needs the spec's document (load_spec keeps it)")
    try:
        return _load(loaded, doc, loaded.filter_set, step, workdir)
    except OSError as e:
        return Outcome(usage=_io_problem(e))
    except RenderBug as e:
        return Outcome(bug=str(e))
    except WasmGitopsError as e:  # EnvoyNotFound and other usage problems
        return Outcome(usage=str(e))


def _load(loaded: LoadedSpec, doc: Document, fs: FilterSet, step: EnvoyStep, workdir: Path) -> Outcome:
    from . import binary, process  # the CLI imports this module; only the step needs these

    candidates, notes = collect(fs, doc, workdir)
    if not candidates:
        return Outcome(EnvoyLoad(0, 0, tuple(notes)))
    envoy = binary.find_envoy(step.envoy)
    pending = {f"{LISTENER_PREFIX}{n}": c for n, c in enumerate(candidates)}
    findings: list[Finding] = []
    runs = 0
    while pending:
        runs += 1
        result = process.validate(envoy, bootstrap(pending), workdir, log_level="debug", timeout=LOAD_TIMEOUT)
        if result.ok:
            break
        failure = failure_of(result.log, list(pending))
        if failure is None and result.returncode is not None and result.returncode < 0:
            # Killed or aborted (out of memory, a limit on address space): the machine, not the spec.
            raise UsageError(f"{envoy.path}: Envoy did not run (it ended with signal {-result.returncode}): "
                             f"{_last_line(result.log)}; run with --no-envoy to skip the Envoy step here")
        if failure is None:
            raise RenderBug("Envoy refused the load-check bootstrap without naming a filter (a bug in "
                            "wasm-gitops, please report it):\n" + _tail(result.log))
        failed = pending.pop(failure.listener)
        # `envoy --version` is a process of its own (~0.1 s): asked only when there is something to say.
        findings.extend(refusal_findings(doc, fs, failed, failure, envoy.version))
        if failure.module:
            # The module fails the same way under every configuration: no run for each of them.
            for name in [n for n, c in pending.items() if c.filter_name == failed.filter_name]:
                del pending[name]
    if findings:
        # The spec's own warnings too: "no ABI marker" is often the reason Envoy gives.
        return Outcome(refused=tuple(sorted(set([*findings, *loaded.warnings, *notes]))))
    return Outcome(EnvoyLoad(len(pending), runs, tuple(notes)))


def _last_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1] if lines else "it printed nothing"


def _tail(log: str, lines: int = 20) -> str:
    return "\n".join(log.splitlines()[-lines:])


def collect(fs: FilterSet, doc: Document, workdir: Path) -> tuple[list[Candidate], list[Finding]]:
    """The distinct HTTP filters of the spec, each with the sites that produce it, and a warning for
    each filter that cannot be loaded here at all (and why)."""
    from . import istio

    modules = workdir / "modules"
    modules.mkdir(exist_ok=True)  # a helper that failed may have begun it
    by_key: dict[str, Candidate] = {}
    # The translation depends only on these (the object istio renders for a filter does not vary
    # with the service otherwise): computed once each, however many services share them.
    translated: dict[tuple[str, str | None, str, str, tuple[int, int]], dict[str, Any] | str] = {}
    keys: dict[tuple[str, str | None, str, str, tuple[int, int]], str] = {}
    skipped: dict[int, str] = {}
    for view, site, output, context, config in _cluster_uses(fs):
        f = fs.filters[site.filter_index]
        inputs = (f.name, config, output, context, view.istio)
        if inputs not in translated:
            try:
                translated[inputs] = istio.http_filter(view, f, config, modules, output=output, context=context)
            except istio.ChainError as e:
                if not f.binary.is_oci:
                    # The objects we render for a file in the tree always give a chain.
                    raise RenderBug(f"the rendered objects of filter {f.name!r} give no Envoy filter (a bug "
                                    f"in wasm-gitops, please report it): {e}") from None
                translated[inputs] = str(e)
        value = translated[inputs]
        if isinstance(value, str):
            skipped.setdefault(site.filter_index, value)
            continue
        if inputs not in keys:
            keys[inputs] = canonical_key(value)
        key = keys[inputs]
        candidate = by_key.get(key)
        if candidate is None:
            candidate = by_key[key] = Candidate(key, value, context)
        candidate.sites.append(site)
    notes = [doc.finding(("filters", k, "wasm"), f"not loaded in Envoy: {why}; validate, render and check "
                         "cannot tell whether Envoy accepts it", severity="warning")
             for k, why in sorted(skipped.items())]
    return list(by_key.values()), notes


def _cluster_uses(fs: FilterSet) -> Iterator[tuple[FilterSet, Site, OutputKind, Context, str | None]]:
    """Every use in every cluster: each cluster's Istio and output kinds shape what Envoy loads there
    (a spec without clusters has one target, the top-level one)."""
    if not fs.clusters:
        for use in _uses(fs):
            yield (fs, *use)
        return
    seen: set[tuple[tuple[int, int], tuple[tuple[str, OutputKind], ...]]] = set()
    for cluster in fs.clusters:
        if (cluster.istio, cluster.outputs) in seen:
            continue
        seen.add((cluster.istio, cluster.outputs))
        # The whole spec's services (the sites index the document), with this cluster's Istio.
        view = dataclasses.replace(fs, istio=cluster.istio, istio_text=cluster.istio_text, clusters=())
        outputs = dict(cluster.outputs)
        for site, output, context, config in _uses(view):
            if site.service_index >= 0 and site.service_name not in outputs:
                continue
            yield view, site, outputs.get(site.service_name, output), context, config


def _uses(fs: FilterSet) -> Iterator[tuple[Site, OutputKind, Context, str | None]]:
    """Every use of a filter with what its object depends on; a filter no service uses is loaded too
    (with its own configuration, as an EnvoyFilter on an inbound sidecar would load it): a module that
    cannot load is worth knowing before the first service adds it."""
    used: set[int] = set()
    for site in sites(fs):
        service = fs.services[site.service_index]
        used.add(site.filter_index)
        yield site, service.output, service.context, service.filters[site.entry_index].config
    for k, f in enumerate(fs.filters):
        if k not in used:
            output: OutputKind = "WasmPlugin" if f.binary.is_oci else "EnvoyFilter"
            yield Site(k, f.name, -1, "", -1, False), output, DEFAULTS.context, f.config


def bootstrap(pending: dict[str, Candidate]) -> dict[str, Any]:
    """One listener per distinct filter, named like its plugin, each chain that filter then the router."""
    from . import istio

    upstream = "load-check"
    listeners = [istio.listener(name, c.context, [for_loading(c.http_filter, name)], upstream)
                 for name, c in pending.items()]
    return istio.bootstrap(listeners, [istio.cluster(upstream, 9)])
