"""`wasm-gitops verify`: the declared tests, each a real request through a real Envoy.

Like `curl -I` against a deployed sidecar, but before merge. One Envoy per command (restarted only
after a case broke a Wasm VM, so the next case gets a working one), one listener per service chain
and per filter test configuration (renderer/envoy/istio.py builds them from the rendered objects),
an upstream on 127.0.0.1 that answers with the test's `response` and records what it got, and a raw
HTTP/1.1 client. What a case observes is what Envoy did:

- request headers as the upstream received them and response headers as the client received them,
  Envoy's own included (x-request-id, x-forwarded-proto, server, date, x-envoy-upstream-service-time);
  names are compared case-insensitively, and an expected value passes if any value of that header
  equals it;
- bodies as they arrived, and the chunks they arrived in;
- a local reply: the stream's response code details are not `via_upstream` (Envoy's access log),
  with the status and body the client received (after the filters' response callbacks);
- `paused`: the stream hit the stream idle timeout (response flag SI); at the request when the
  upstream never received it, else at the response;
- `logs`: the filter's log lines (Envoy's `wasm log ...: message`) as "level: message", at the wasm
  log level of the case: trace for a filter's own tests, the service's `proxyLogLevel` wasm level
  (else Istio's default, warning) for a service's tests;
- a Wasm VM that traps, or a filter that never returns, fails its case with Envoy's reason; Envoy is
  then stopped (killed when it does not stop) and a fresh one serves the next case.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .envoy import http, istio
from .envoy.binary import EnvoyBinary
from .envoy.process import EnvoyFailed, EnvoyServer, validate
from .model import DEFAULTS, Context, HttpMessageSpec, Paused, TestExpect, TestSpec

__all__ = ["Case", "CaseResult", "Listener", "run"]

Obj = dict[str, Any]

STREAM_IDLE_TIMEOUT = 1.0  # seconds: how long a stalled stream takes to count as paused
CLIENT_TIMEOUT = 4.0  # a filter that never returns blocks Envoy's worker: the client gives up here
ACCESS_LOG_WAIT = 1.0
LOG_FORMAT = "%l|%n|%v"
FILE_FLUSH_MS = 5
ISTIO_DEFAULT_WASM_LEVEL = "warning"


@dataclass(frozen=True)
class Listener:
    """One listener of the Envoy under test: a service's chain, or one filter with one configuration."""

    name: str
    context: Context
    http_filters: tuple[Obj, ...]
    host: str  # the service's host name: the default :authority of its requests
    problem: str | None = None  # the chain could not be built: every case on it fails with this
    virtual_hosts: tuple[Obj, ...] = ()  # a gateway's route table (routing to "upstream"); () routes all


@dataclass(frozen=True)
class Case:
    target: str  # the filter's or the service's name
    kind: Literal["filter", "service", "gateway"]
    listener: str
    test: TestSpec
    wasm_level: str

    @property
    def label(self) -> str:
        return f"{self.target}/{self.test.name}" if self.kind == "filter" else f"{self.kind}:{self.target}/{self.test.name}"


@dataclass(frozen=True)
class LocalReply:
    status: int
    body: bytes
    details: str


@dataclass(frozen=True)
class CaseResult:
    """One case: its verdict, why, and what Envoy did."""

    case: Case
    passed: bool
    failures: tuple[str, ...]
    sent: http.Message = field(default_factory=http.Message)
    upstream: http.Received | None = None  # what the upstream received; None: the request never reached it
    response: http.Received | None = None  # what the client received; None: no complete response
    local_reply: LocalReply | None = None
    paused: Paused = "none"
    flags: str = ""  # Envoy's response flags (access log), "" when unknown
    details: str = ""  # Envoy's response code details
    logs: tuple[str, ...] = ()  # the filters' "level: message" lines
    envoy_log: tuple[str, ...] = ()  # everything Envoy logged during the case
    config_rejected: bool = False
    error: str | None = None

    @property
    def name(self) -> str:
        return self.case.test.name

    @property
    def expected(self) -> TestExpect:
        return self.case.test.expect


def _status(received: http.Received | None) -> int | None:
    if received is None:
        return None
    return int(dict(received.headers)[":status"])


# ------------------------------------------------------------------------------ Envoy's log


@dataclass(frozen=True)
class _Entry:
    level: str
    logger: str
    message: str

    def __str__(self) -> str:
        return f"[{self.level}][{self.logger}] {self.message}"


_FILTER_LOG = re.compile(r"^wasm log[^:]*: ", re.S)


def _entries(text: str) -> list[_Entry]:
    """Lines in LOG_FORMAT; a line without the prefix continues the entry before it (a backtrace)."""
    out: list[_Entry] = []
    for line in text.splitlines():
        level, sep, rest = line.partition("|")
        logger, sep2, message = rest.partition("|")
        if sep and sep2 and level.isalpha() and logger.replace("_", "").isalnum():
            out.append(_Entry(level, logger, message))
        elif out:
            last = out[-1]
            out[-1] = _Entry(last.level, last.logger, f"{last.message}\n{line}")
        elif line.strip():
            out.append(_Entry("", "", line))
    return out


def _filter_logs(entries: Sequence[_Entry]) -> tuple[str, ...]:
    return tuple(f"{e.level}: {_FILTER_LOG.sub('', e.message, count=1)}" for e in entries
                 if e.logger == "wasm" and _FILTER_LOG.match(e.message))


def _vm_failures(entries: Sequence[_Entry]) -> list[str]:
    """Envoy's own words when a VM failed (a trap, an abort): error lines of the wasm logger that
    are not a filter's log."""
    return [e.message for e in entries
            if e.logger == "wasm" and e.level in ("error", "critical") and not _FILTER_LOG.match(e.message)]


_CONFIG_PATH = re.compile(r"error initializing configuration '[^']*': ")


def _reasons(log: str) -> str:
    """Envoy's error lines, without the path of the temporary bootstrap (the same words every run)."""
    picked = [_CONFIG_PATH.sub("", e.message) for e in _entries(log) if e.level in ("error", "critical")]
    return "; ".join(picked) if picked else log.strip()[-2000:]


# ------------------------------------------------------------------------------ running


def _listener_config(lst: Listener, access_log: Path | None, upstream: str) -> Obj:
    return istio.listener(lst.name, lst.context, lst.http_filters, upstream, service_host=lst.host,
                          stream_idle_timeout=f"{STREAM_IDLE_TIMEOUT}s",
                          access_log_path=None if access_log is None else str(access_log),
                          virtual_hosts=lst.virtual_hosts)


def _rejected(envoy: EnvoyBinary, listeners: Sequence[Listener], workdir: Path) -> dict[str, str]:
    """Listener name -> Envoy's reason, for every listener Envoy refuses (`--mode validate`). One run
    for all; only when it fails, one run per distinct filter configuration says which."""
    upstream = [istio.cluster("upstream", 9)]
    loadable = list(listeners)
    whole = validate(envoy, istio.bootstrap([_listener_config(lst, None, "upstream") for lst in loadable], upstream),
                     workdir, log_format=LOG_FORMAT)
    if whole.ok:
        return {}
    distinct: dict[str, Obj] = {}
    for lst in loadable:
        for f in lst.http_filters:
            distinct.setdefault(json.dumps(f, sort_keys=True), f)

    def one(item: tuple[int, Obj]) -> str | None:
        index, f = item
        work = workdir / f"validate-{index}"
        work.mkdir(exist_ok=True)
        result = validate(envoy, istio.bootstrap([istio.listener("one", DEFAULTS.context, [f], "upstream")], upstream),
                          work, log_format=LOG_FORMAT)
        return None if result.ok else _reasons(result.log)

    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = dict(zip(distinct, pool.map(one, enumerate(distinct.values())), strict=True))
    rejected: dict[str, str] = {}
    for lst in loadable:
        reasons = [r for f in lst.http_filters if (r := verdicts[json.dumps(f, sort_keys=True)]) is not None]
        if reasons:
            rejected[lst.name] = reasons[0]
    rest = [lst for lst in loadable if lst.name not in rejected]
    if rest and len(rest) < len(loadable):
        again = validate(envoy, istio.bootstrap([_listener_config(lst, None, "upstream") for lst in rest], upstream),
                         workdir, log_format=LOG_FORMAT)
        if not again.ok:
            rejected.update({lst.name: _reasons(again.log) for lst in rest})
    elif not rejected:
        # No filter refused alone, yet the whole was: every listener shares the blame.
        rejected.update({lst.name: _reasons(whole.log) for lst in loadable})
    return rejected


def _to_http_message(spec: HttpMessageSpec, default_host: str | None = None) -> http.Message:
    """A test's request or response as the client sends it, addressed to default_host when it names no host."""
    headers = tuple(spec.headers)
    if default_host is not None and not any(k.lower() in (":authority", "host") for k, _ in headers):
        headers = (*headers, (":authority", default_host))
    body = spec.body.encode("utf-8") if spec.body is not None else None
    return http.Message(headers, body, tuple(spec.trailers), spec.chunks)


class _AccessLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._seen: dict[tuple[str, str], Obj] = {}

    def find(self, listener: str, peer: str, wait: float) -> Obj | None:
        deadline = time.monotonic() + wait
        while True:
            with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                self._offset += len(complete)
                for line in complete.decode("utf-8", "replace").splitlines():
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        self._seen[(str(entry.get("listener")), str(entry.get("peer")))] = entry
            if (listener, peer) in self._seen or time.monotonic() > deadline:
                return self._seen.get((listener, peer))
            time.sleep(0.002)


class _Runner:
    def __init__(self, envoy: EnvoyBinary, listeners: Sequence[Listener], workdir: Path,
                 upstream: http.Upstream) -> None:
        self.envoy, self.workdir, self.upstream = envoy, workdir, upstream
        self.listeners = {lst.name: lst for lst in listeners}
        self.server: EnvoyServer | None = None
        self.ports: dict[str, int] = {}
        self.level = ""
        self.starts = 0
        self.access: _AccessLog | None = None

    def start(self, level: str) -> None:
        self.starts += 1
        access = self.workdir / f"access-{self.starts}.log"
        bootstrap = istio.bootstrap([_listener_config(lst, access, "upstream") for lst in self.listeners.values()],
                                    [istio.cluster("upstream", self.upstream.port)])
        server = EnvoyServer(self.envoy, bootstrap, self.workdir, log_level="warning",
                             component_log_level=[("wasm", level)], log_format=LOG_FORMAT,
                             file_flush_ms=FILE_FLUSH_MS, name=f"bootstrap-{self.starts}.json")
        server.start()
        self.server, self.level, self.access = server, level, _AccessLog(access)
        self.ports = server.listener_ports()

    def stop(self, grace: float | None = None) -> None:
        if self.server is not None:
            self.server.stop(grace)
            self.server = None

    def run(self, case: Case) -> CaseResult:
        if self.server is None or not self.server.running:
            self.start(case.wasm_level)
        server, access = self.server, self.access
        assert server is not None and access is not None
        if case.wasm_level != self.level:
            server.post(f"/logging?wasm={case.wasm_level}")
            self.level = case.wasm_level
        lst = self.listeners[case.listener]
        sent = _to_http_message(case.test.request, lst.host)
        received = self.upstream.answer(_to_http_message(case.test.response))
        mark = server.log_size()
        exchange = http.request(self.ports[case.listener], sent, timeout=CLIENT_TIMEOUT)
        entry = access.find(case.listener, exchange.peer, ACCESS_LOG_WAIT if exchange.response else 0.2)
        server.sync_log()
        entries = _entries(server.log_since(mark))
        failures = _vm_failures(entries)
        stuck = exchange.response is None and entry is None
        if failures or stuck:
            # A failed VM stays failed and a looping one holds the only worker: the next case gets a
            # fresh Envoy. A stuck worker never finishes a graceful stop, so it is not waited for.
            self.stop(grace=0.2 if stuck else None)
        error = None
        if failures:
            error = "; ".join(f.splitlines()[0] for f in failures)  # the backtrace stays in the log
        elif stuck:
            error = (f"Envoy sent no response in {CLIENT_TIMEOUT:.0f} s and logged no end of the stream: a filter "
                     "that does not return (a loop) holds Envoy's worker")
        return _judge(case, sent, list(received), exchange, entry, entries, error)


def _judge(case: Case, sent: http.Message, received: list[http.Received], exchange: http.Exchange,
           entry: Obj | None, entries: Sequence[_Entry], error: str | None) -> CaseResult:
    exp = case.test.expect
    upstream = received[0] if received else None
    response = exchange.response
    flags = str(entry.get("flags") or "") if entry else ""
    details = str(entry.get("details") or "") if entry else ""
    paused: Paused = "none"
    if "SI" in flags.split(","):
        paused = "response" if upstream is not None else "request"
    reply = None
    if response is not None and paused == "none" and details and details != "via_upstream":
        reply = LocalReply(int(dict(response.headers)[":status"]), response.body, details)
    logs = _filter_logs(entries)
    failures: list[str] = []
    if exp.config_rejected:
        failures.append("expected Envoy to refuse the configuration, but it loaded it")
    elif error is not None:
        failures.append(f"error: {error}")
    else:
        failures += _check_headers("request", upstream.headers if upstream else (), exp.request_headers,
                                   exp.absent_request_headers)
        failures += _check_headers("response", response.headers if response else (), exp.response_headers,
                                   exp.absent_response_headers)
        failures += _check_local_reply(exp, reply)
        if exp.paused != paused:
            failures.append(f"paused: expected {exp.paused}, got {paused}{_pause_hint(paused, upstream)}")
        if exchange.error is not None and paused == "none":
            failures.append(f"the client got no complete response: {exchange.error}")
        status = _status(response)
        if exp.status is not None and status != exp.status:
            failures.append(f"status: expected {exp.status}, got {status if status is not None else '(no response)'}")
        if exp.request_body is not None:
            got = upstream.body if upstream else None
            if got != exp.request_body.encode("utf-8"):
                failures.append(f"request body: expected {_quote_text(exp.request_body)}, got "
                                f"{_quote(got) if got is not None else '(the request never reached the upstream)'}")
        if exp.response_body is not None:
            got = response.body if response else None
            if got != exp.response_body.encode("utf-8"):
                failures.append(f"response body: expected {_quote_text(exp.response_body)}, got {_quote(got)}")
        failures += _check_logs(exp.logs, logs)
    return CaseResult(case, not failures, tuple(failures), sent, upstream, response, reply, paused, flags, details,
                      logs, tuple(str(e) for e in entries), False, error)


def _rejected_result(case: Case, reason: str) -> CaseResult:
    if case.test.expect.config_rejected:
        return CaseResult(case, True, (), config_rejected=True, envoy_log=(reason,))
    return CaseResult(case, False, (f"Envoy refused the configuration: {reason}",), config_rejected=True,
                      envoy_log=(reason,), error=reason)


def _pause_hint(paused: Paused, upstream: http.Received | None) -> str:
    if paused == "none":
        return ""
    where = "the upstream never received the request" if upstream is None else "after the upstream answered"
    return f" (the stream stalled until Envoy's stream idle timeout, {where}: a filter returned StopIteration and " \
           "never resumed)"


def _check_headers(side: str, seen: Sequence[tuple[str, str]], expected: Sequence[tuple[str, str]],
                   absent: Sequence[str]) -> list[str]:
    failures = []
    for name, value in expected:
        values = [v for k, v in seen if k.lower() == name.lower()]
        if value not in values:
            got = ", ".join(_quote_text(v) for v in values) if values else "(absent)"
            failures.append(f"{side} header {name.lower()}: expected {_quote_text(value)}, got {got}")
    for name in absent:
        values = [v for k, v in seen if k.lower() == name.lower()]
        if values:
            failures.append(f"{side} header {name.lower()}: expected absent, got {', '.join(_quote_text(v) for v in values)}")
    return failures


def _check_local_reply(exp: TestExpect, got: LocalReply | None) -> list[str]:
    expected = exp.local_reply
    if expected is None:
        if got is not None:
            return [f"unexpected local reply {got.status} {_quote(got.body)} (details {got.details!r})"]
        return []
    if got is None:
        return [f"expected a local reply {expected.status}, but none was sent"]
    failures = []
    if got.status != expected.status:
        failures.append(f"local reply status: expected {expected.status}, got {got.status}")
    if expected.body is not None and got.body != expected.body.encode("utf-8"):
        failures.append(f"local reply body: expected {_quote_text(expected.body)}, got {_quote(got.body)} (as the "
                        "client received it, after the filters' response callbacks)")
    return failures


def _check_logs(patterns: Sequence[str], lines: Sequence[str]) -> list[str]:
    failures = []
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            failures.append(f"log pattern {pattern!r} is not a valid regular expression: {exc}")
            continue
        if not any(regex.search(line) for line in lines):
            failures.append(f"no log line matches /{pattern}/")
    return failures


def _quote(data: bytes | None) -> str:
    if data is None:
        return "(none)"
    return json.dumps(data.decode("utf-8", "backslashreplace"))


def _quote_text(text: str) -> str:
    return json.dumps(text)


def run(envoy: EnvoyBinary, listeners: Sequence[Listener], cases: Sequence[Case], *,
        progress: Callable[[int, int, CaseResult], None] | None = None) -> list[CaseResult]:
    """Every case, in order, through one Envoy; no process outlives this call."""
    results: list[CaseResult] = []

    def done(result: CaseResult) -> None:
        results.append(result)
        if progress is not None:
            progress(len(results), len(cases), result)

    with tempfile.TemporaryDirectory(prefix="wasm-gitops-verify-") as tmp:
        workdir = Path(tmp)
        problems = {lst.name: lst.problem for lst in listeners if lst.problem is not None}
        rejected: dict[str, str] = {}
        with http.Upstream() as upstream:
            runner = _Runner(envoy, [lst for lst in listeners if lst.problem is None], workdir, upstream)
            try:
                runnable = [c for c in cases if c.listener in runner.listeners]
                if runnable:
                    # Starting is the cheapest check that Envoy takes every listener; only when it does
                    # not, `--mode validate` per filter configuration says which listeners it refuses.
                    try:
                        runner.start(runnable[0].wasm_level)
                    except EnvoyFailed:
                        rejected = _rejected(envoy, list(runner.listeners.values()), workdir)
                        runner.listeners = {n: lst for n, lst in runner.listeners.items() if n not in rejected}
                for case in cases:
                    if case.listener in problems:
                        done(CaseResult(case, False, (f"error: {problems[case.listener]}",),
                                        error=problems[case.listener]))
                    elif case.listener in rejected:
                        done(_rejected_result(case, rejected[case.listener]))
                    else:
                        try:
                            done(runner.run(case))
                        except EnvoyFailed as e:
                            reason = _reasons(e.log)
                            done(CaseResult(case, False, (f"error: Envoy did not start: {reason}",), error=reason,
                                            envoy_log=tuple(str(x) for x in _entries(e.log))))
            finally:
                runner.stop()
    return results
