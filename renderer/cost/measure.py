"""Running a measurement: the Envoys of every variant, the probe, the starts, the warm-up and the
interleaved rounds; one upstream for all."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..envoy.binary import EnvoyBinary
from ..envoy.process import EnvoyFailed, EnvoyServer
from .chains import Chain, bootstrap_for, upstream_bootstrap, with_native, without_wasm
from .load import LoadRun, MeasurementFailed, Settings, find_wrk, machine, run_wrk
from .probe import PROBE_PATH, Effect, effect_of, probe
from .readings import cpu_sample, rss_bytes, wasm_stats
from .report import VARIANTS, ChainResult, VariantResult, build_report


def _start(envoy: EnvoyBinary, bootstrap: dict[str, Any], workdir: Path, *,
           concurrency: int = 1) -> tuple[EnvoyServer, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    # At info, Envoy logs when it starts loading the listeners and when it is done with them.
    server = EnvoyServer(envoy, bootstrap, workdir, concurrency=concurrency, log_level="info")
    began = time.monotonic()
    try:
        server.start()
    except EnvoyFailed as e:
        raise MeasurementFailed(f"Envoy refused the listener: {_last_lines(e.log)}") from None
    return server, (time.monotonic() - began) * 1000


def _last_lines(log: str, n: int = 5) -> str:
    lines = [ln for ln in log.splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no log)"


def _single_port(server: EnvoyServer) -> int:
    ports = server.listener_ports()
    if len(ports) != 1:
        raise MeasurementFailed(f"expected one listener, Envoy has {sorted(ports)}")
    return next(iter(ports.values()))


def _native_for(chain: Chain, chains: dict[str, list[dict[str, Any]]], envoy: EnvoyBinary, upstream_port: int,
                workdir: Path, stack: contextlib.ExitStack) -> tuple[Effect, Effect | None]:
    """What the chain does to a probe request (against the bare listener), and the effect a native
    header_mutation reproduces exactly, or None. The native chain is added to `chains` only when
    Envoy, probed the same way, shows the very same effect."""
    servers = {}
    for name in ("none", "wasm"):
        server, _ = _start(envoy, bootstrap_for(chain, chains[name], upstream_port), workdir / f"{name}-probe")
        stack.callback(server.stop)
        servers[name] = server
    seen = {name: [probe(_single_port(s)) for _ in range(2)] for name, s in servers.items()}
    for name, s in servers.items():
        s.stop()
        if seen[name][0].status != 200:
            which = "with the chain" if name == "wasm" else "without the chain"
            raise MeasurementFailed(f"service {chain.service}: the listener {which} answers "
                                    f"{seen[name][0].status} to GET {PROBE_PATH}; cost measures requests that "
                                    "pass the chain")
    effect = effect_of(seen["wasm"], seen["none"])
    if not effect.headers_only:
        return effect, None
    candidate = with_native(chains["wasm"], effect)
    server, _ = _start(envoy, bootstrap_for(chain, candidate, upstream_port), workdir / "native-probe")
    stack.callback(server.stop)
    native_seen = [probe(_single_port(server)) for _ in range(2)]
    server.stop()
    if effect_of(native_seen, seen["none"]) != effect:
        return effect, None  # header_mutation does not reproduce it: no fair comparison
    chains["native"] = candidate
    return effect, effect


def measure_chain(chain: Chain, same_as: list[Chain], envoy: EnvoyBinary, wrk: Path, upstream_port: int,
                  upstream_pid: int, settings: Settings, workdir: Path,
                  progress: Callable[[str], None]) -> ChainResult:
    full = list(chain.http_filters)
    chains: dict[str, list[dict[str, Any]]] = {"none": without_wasm(full), "wasm": full}
    with contextlib.ExitStack() as stack:
        progress(f"{chain.service}: what the chain does")
        effect, native = _native_for(chain, chains, envoy, upstream_port, workdir, stack)
        chains["control"] = chains["none"]
        variants = [v for v in VARIANTS if v in chains]
        results = {name: VariantResult(name) for name in variants}

        servers = _start_each(chain, chains, results, envoy, upstream_port, settings, workdir, stack)
        ports = {name: _single_port(s) for name, s in servers.items()}
        pids = {name: s.pid for name, s in servers.items()}
        for name in variants:
            results[name].rss_ready[1] = rss_bytes(pids[name])
        _two_worker_rss(chain, chains, results, envoy, upstream_port, workdir, stack)

        def load(name: str, paced_run: bool) -> LoadRun:
            try:
                return run_wrk(wrk, ports[name], pids[name], upstream_pid, settings, paced_run=paced_run,
                               workdir=workdir)
            finally:
                # A filter that brings Envoy down shows as failed requests first; say what happened.
                if not servers[name].running:
                    raise MeasurementFailed(f"service {chain.service}: Envoy ({name}) exited during a load run: "
                                            f"{_last_lines(servers[name].log())}")

        # A warm-up run each (V8 tiers hot functions up, connections open), then the rounds, each in
        # a rotated order so that no variant always runs first or last.
        progress(f"{chain.service}: warming up")
        for name in variants:
            load(name, False)
        for r in range(settings.rounds):
            progress(f"{chain.service}: round {r + 1}/{settings.rounds}")
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for name in order:
                results[name].paced.append(load(name, True))
            for name in order:
                results[name].saturated.append(load(name, False))
        for name in variants:
            server = servers[name]
            results[name].rss = rss_bytes(pids[name])
            memory = server.admin_json("/memory")
            results[name].memory = {k: int(v) for k, v in memory.items() if str(v).isdigit()}
            results[name].wasm_vms_active, results[name].wasm_vms_created = wasm_stats(server)
    for result in results.values():
        result.read_logs()
    return ChainResult(chain, same_as, native, effect, results)


def _start_each(chain: Chain, chains: dict[str, list[dict[str, Any]]], results: dict[str, VariantResult],
                envoy: EnvoyBinary, upstream_port: int, settings: Settings, workdir: Path,
                stack: contextlib.ExitStack) -> dict[str, EnvoyServer]:
    """Each variant started `starts` times, interleaved, for the load/compile time; the last stays up."""
    servers: dict[str, EnvoyServer] = {}
    for i in range(settings.starts):
        for name in results:
            if name in servers:
                servers[name].stop()
            server, ms = _start(envoy, bootstrap_for(chain, chains[name], upstream_port), workdir / f"{name}-{i}")
            stack.callback(server.stop)
            servers[name] = server
            results[name].ready_ms.append(ms)
            results[name].starts.append(server)
    return servers


def _two_worker_rss(chain: Chain, chains: dict[str, list[dict[str, Any]]], results: dict[str, VariantResult],
                    envoy: EnvoyBinary, upstream_port: int, workdir: Path, stack: contextlib.ExitStack) -> None:
    """A second worker gets VMs of its own: one more start with two workers, with and without the chain,
    says what each worker's VM adds (Istio runs as many workers as the pod's CPU limit)."""
    for name in ("none", "wasm"):
        server, _ = _start(envoy, bootstrap_for(chain, chains[name], upstream_port), workdir / f"{name}-2w",
                           concurrency=2)
        stack.callback(server.stop)
        results[name].rss_ready[2] = rss_bytes(server.pid)
        server.stop()


def _signature(chain: Chain) -> str:
    """Two services with equal chains are measured once. The chains come from one call of
    istio.filter_set_chains, which writes each module once per content: equal filenames are equal
    bytes, so comparing the configurations compares the modules too."""
    return json.dumps(list(chain.http_filters), sort_keys=True)


def run(chains: Sequence[Chain], envoy: EnvoyBinary, settings: Settings, *, wrk: Path | None = None,
        progress: Callable[[str], None] | None = None, skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
    settings.check()
    wrk_path = wrk if wrk is not None else find_wrk()
    say: Callable[[str], None] = progress or (lambda _: None)
    groups: dict[str, list[Chain]] = {}
    for chain in chains:
        groups.setdefault(_signature(chain), []).append(chain)
    began, before = time.monotonic(), cpu_sample()
    results = []
    with tempfile.TemporaryDirectory(prefix="wasm-gitops-cost-") as tmp, _upstream(envoy, Path(tmp)) as (port, upstream_pid):
        for i, group in enumerate(groups.values()):
            results.append(measure_chain(group[0], group[1:], envoy, wrk_path, port, upstream_pid, settings, Path(tmp) / f"chain-{i}", say))
    return build_report(results, machine(envoy, wrk_path), settings, before, cpu_sample(),
                        time.monotonic() - began, skipped)


@contextlib.contextmanager
def _upstream(envoy: EnvoyBinary, tmp: Path) -> Iterator[tuple[int, int]]:
    server, _ = _start(envoy, upstream_bootstrap(), tmp / "upstream")
    try:
        yield _single_port(server), server.pid
    finally:
        server.stop()


def stderr_progress(message: str) -> None:
    if sys.stderr.isatty():
        print(f"cost: {message}", file=sys.stderr, flush=True)
