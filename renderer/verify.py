"""`wasm-gitops verify`: run each filter's declared test cases through the embedded proxy-wasm host.

Like `curl -I` against a deployed sidecar, but offline and before merge. The lead's loader turns the
`tests:` entries of filters.yaml into VerifyCase objects; this module runs them and reports.

Behaviour worth knowing when writing expectations (it is Envoy's, see renderer/proxywasm/host.py):
- Header names are matched case-insensitively (Envoy lower-cases them); an expected value passes if
  any value of that header equals it.
- A local reply sent from a request callback skips the upstream: the declared `response` is not
  used. Envoy sends the reply through the encoder filter chain, this filter included, so the
  filter's response callbacks see (and may change) the reply; `responseHeaders` is checked against
  the reply as the client receives it. A reply sent from a response callback goes straight to the
  client without passing through the filter again.
- `paused` defaults to none, and `localReply` absent means "no local reply": a filter that stalls
  or rejects the request fails a test that did not ask for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from renderer.proxywasm.host import (
    ExchangeResult,
    HostOptions,
    HttpMessage,
    LocalReply,
    PluginSpec,
    ProxyWasmError,
    compile_module,
    run_http_exchange,
)

__all__ = [
    "CaseResult",
    "Expectation",
    "ExpectedLocalReply",
    "FilterUnderTest",
    "HttpMessage",
    "VerifyCase",
    "format_results",
    "run_case",
    "run_cases",
]

PausedAt = Literal["request", "response", "none"]
OutputFormat = Literal["text", "json"]


@dataclass(frozen=True)
class ExpectedLocalReply:
    """`expect.localReply`: the status, and the body when given (None accepts any body)."""

    status: int
    body: bytes | None = None


@dataclass(frozen=True)
class Expectation:
    """`expect:` of one test case. Empty fields assert nothing, except `paused` and `local_reply`."""

    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    absent_request_headers: tuple[str, ...] = ()
    absent_response_headers: tuple[str, ...] = ()
    local_reply: ExpectedLocalReply | None = None
    paused: PausedAt = "none"
    logs: tuple[str, ...] = ()  # regular expressions, each must match one "level: message" line
    request_body: bytes | None = None  # body upstream would receive, when given
    response_body: bytes | None = None  # body the client would receive, when given


@dataclass(frozen=True)
class VerifyCase:
    name: str
    request: HttpMessage
    response: HttpMessage
    expect: Expectation = field(default_factory=Expectation)


@dataclass(frozen=True)
class FilterUnderTest:
    """One filter as Envoy would load it: module bytes, ids, and the two configuration blobs."""

    name: str
    wasm: bytes
    root_id: str = ""
    vm_id: str = ""
    plugin_config: bytes = b""  # the JSON text of the filter's config, or b""
    vm_config: bytes = b""


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: verdict, reasons, and everything observed for the report."""

    name: str
    passed: bool
    failures: tuple[str, ...]
    expected: Expectation
    request_headers: tuple[tuple[str, str], ...] = ()  # after the filter: what upstream would get
    request_body: bytes | None = None
    response_headers: tuple[tuple[str, str], ...] = ()  # what the client would get; () if none
    response_body: bytes | None = None
    local_reply: LocalReply | None = None
    paused: PausedAt = "none"
    reset: bool = False
    logs: tuple[str, ...] = ()
    unimplemented: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view; bytes become text with undecodable bytes escaped."""
        reply = None
        if self.local_reply is not None:
            reply = {
                "status": self.local_reply.status,
                "body": _show(self.local_reply.body),
                "headers": [list(h) for h in self.local_reply.headers],
                "details": self.local_reply.details,
                "grpcStatus": self.local_reply.grpc_status,
                "phase": self.local_reply.phase,
            }
        exp = self.expected
        return {
            "name": self.name,
            "passed": self.passed,
            "failures": list(self.failures),
            "error": self.error,
            "observed": {
                "requestHeaders": [list(h) for h in self.request_headers],
                "requestBody": _show(self.request_body),
                "responseHeaders": [list(h) for h in self.response_headers],
                "responseBody": _show(self.response_body),
                "localReply": reply,
                "paused": self.paused,
                "reset": self.reset,
                "logs": list(self.logs),
            },
            "expected": {
                "requestHeaders": [list(h) for h in exp.request_headers],
                "responseHeaders": [list(h) for h in exp.response_headers],
                "absentRequestHeaders": list(exp.absent_request_headers),
                "absentResponseHeaders": list(exp.absent_response_headers),
                "localReply": None
                if exp.local_reply is None
                else {"status": exp.local_reply.status, "body": _show(exp.local_reply.body)},
                "paused": exp.paused,
                "logs": list(exp.logs),
                "requestBody": _show(exp.request_body),
                "responseBody": _show(exp.response_body),
            },
            "unimplementedHostCalls": list(self.unimplemented),
            "warnings": list(self.warnings),
        }


def _show(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "backslashreplace")


def _plugin(filter: FilterUnderTest) -> PluginSpec:
    return PluginSpec(
        name=filter.name,
        root_id=filter.root_id,
        vm_id=filter.vm_id,
        plugin_config=filter.plugin_config,
        vm_config=filter.vm_config,
    )


def run_case(filter: FilterUnderTest, case: VerifyCase, *, options: HostOptions | None = None) -> CaseResult:
    """Run one case in a fresh VM (a fresh wasmtime Store): nothing leaks from earlier cases."""
    return run_cases(filter, [case], options=options)[0]


def run_cases(
    filter: FilterUnderTest, cases: Sequence[VerifyCase], *, options: HostOptions | None = None
) -> list[CaseResult]:
    """Compile the filter once, then run every case in its own Store; a trap fails only its case."""
    try:
        compiled = compile_module(filter.wasm)
    except ProxyWasmError as exc:
        return [_failed(case, f"cannot load {filter.name}: {exc}") for case in cases]
    plugin = _plugin(filter)
    results = []
    for case in cases:
        exchange = run_http_exchange(compiled, plugin, case.request, case.response, options=options)
        results.append(judge(case, exchange))
    return results


def _failed(case: VerifyCase, message: str) -> CaseResult:
    return CaseResult(name=case.name, passed=False, failures=(message,), expected=case.expect, error=message)


def judge(case: VerifyCase, exchange: ExchangeResult) -> CaseResult:
    """Compare what the host observed with the case's expectation."""
    exp = case.expect
    response = exchange.response
    response_headers = response.headers if response is not None else ()
    failures: list[str] = []
    if exchange.error is not None:
        # Whatever else was or was not observed, a trap or a refused start is the story to tell.
        failures.append(f"error: {exchange.error}")
    else:
        failures += _check_headers("request", exchange.request.headers, exp.request_headers, exp.absent_request_headers)
        failures += _check_headers("response", response_headers, exp.response_headers, exp.absent_response_headers)
        failures += _check_local_reply(exp.local_reply, exchange.local_reply)
        if exp.paused != exchange.paused:
            failures.append(f"paused: expected {exp.paused}, got {exchange.paused}{_pause_hint(exchange.paused)}")
        if exchange.reset:
            failures.append("the filter reset the stream (proxy_close_stream)")
        if exp.request_body is not None and exchange.request.body != exp.request_body:
            failures.append(f"request body: expected {_quote(exp.request_body)}, got {_quote(exchange.request.body)}")
        if exp.response_body is not None:
            got = response.body if response is not None else None
            if got != exp.response_body:
                failures.append(f"response body: expected {_quote(exp.response_body)}, got {_quote(got)}")
        failures += _check_logs(exp.logs, exchange.logs)
    return CaseResult(
        name=case.name,
        passed=not failures,
        failures=tuple(failures),
        expected=exp,
        request_headers=exchange.request.headers,
        request_body=exchange.request.body,
        response_headers=response_headers,
        response_body=response.body if response is not None else None,
        local_reply=exchange.local_reply,
        paused=exchange.paused,
        reset=exchange.reset,
        logs=exchange.logs,
        unimplemented=exchange.unimplemented,
        warnings=exchange.warnings,
        error=exchange.error,
    )


def _pause_hint(paused: PausedAt) -> str:
    if paused == "none":
        return ""
    return " (the filter returned StopIteration and never resumed the stream)"


def _check_headers(
    side: str,
    seen: Sequence[tuple[str, str]],
    expected: Sequence[tuple[str, str]],
    absent: Sequence[str],
) -> list[str]:
    failures = []
    for name, value in expected:
        values = [v for k, v in seen if k.lower() == name.lower()]
        if value not in values:
            got = ", ".join(_quote_text(v) for v in values) if values else "(absent)"
            failures.append(f"{side} header {name.lower()}: expected {_quote_text(value)}, got {got}")
    for name in absent:
        values = [v for k, v in seen if k.lower() == name.lower()]
        if values:
            failures.append(
                f"{side} header {name.lower()}: expected absent, got {', '.join(_quote_text(v) for v in values)}"
            )
    return failures


def _check_local_reply(expected: ExpectedLocalReply | None, got: LocalReply | None) -> list[str]:
    if expected is None:
        if got is not None:
            return [f"unexpected local reply {got.status} {_quote(got.body)} (details {got.details!r})"]
        return []
    if got is None:
        return [f"expected a local reply {expected.status}, but the filter sent none"]
    failures = []
    if got.status != expected.status:
        failures.append(f"local reply status: expected {expected.status}, got {got.status}")
    if expected.body is not None and got.body != expected.body:
        failures.append(f"local reply body: expected {_quote(expected.body)}, got {_quote(got.body)}")
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


def format_results(results: Sequence[tuple[str, CaseResult]], fmt: OutputFormat = "text") -> str:
    """Render (filter name, result) pairs: a PASS/FAIL line per case, or stable JSON."""
    if fmt == "json":
        payload = {
            "cases": [{"filter": filter_name, **result.to_dict()} for filter_name, result in results],
            "summary": _summary(results),
        }
        return json.dumps(payload, indent=2, sort_keys=True)
    if fmt != "text":
        raise ValueError(f"unknown format {fmt!r}: use text or json")
    lines: list[str] = []
    for filter_name, result in results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'} {filter_name}/{result.name}")
        if not result.passed:
            lines += _explain(result)
        for call in result.unimplemented:
            lines.append(f"  note: unimplemented host call {call}")
        for warning in result.warnings:
            lines.append(f"  warning: {warning}")
    summary = _summary(results)
    # Worded so no CI log parser mistakes it for a test runner's "N passed, N failed" line.
    lines.append(f"{summary['total']} cases ({summary['passed']} passed, {summary['failed']} failed)")
    return "\n".join(lines) + "\n"


def _summary(results: Sequence[tuple[str, CaseResult]]) -> dict[str, int]:
    passed = sum(1 for _, r in results if r.passed)
    return {"total": len(results), "passed": passed, "failed": len(results) - passed}


def _explain(result: CaseResult) -> list[str]:
    exp = result.expected
    out = [f"  - {failure}" for failure in result.failures]
    out += _seen_and_expected("request headers after the filter", result.request_headers,
                              "request", exp.request_headers, exp.absent_request_headers)
    out += _seen_and_expected("response headers seen by the client", result.response_headers,
                              "response", exp.response_headers, exp.absent_response_headers)
    if result.local_reply is not None:
        out.append(f"  local reply: {result.local_reply.status} {_quote(result.local_reply.body)}")
    if result.paused != "none":
        out.append(f"  paused at: {result.paused}")
    if result.logs:
        out.append("  logs:")
        out += [f"    {line}" for line in result.logs]
    return out


def _seen_and_expected(seen_title: str, seen: Sequence[tuple[str, str]], side: str,
                       expected: Sequence[tuple[str, str]], absent: Sequence[str]) -> list[str]:
    out = [f"  {seen_title}:", *_header_lines(seen)]
    if expected or absent:
        out.append(f"  expected {side} headers:")
        out += [f"    {k.lower()}: {v}" for k, v in expected]
        out += [f"    {k.lower()}: (absent)" for k in absent]
    return out


def _header_lines(headers: Sequence[tuple[str, str]]) -> list[str]:
    if not headers:
        return ["    (none)"]
    return [f"    {k}: {v}" for k, v in headers]
