"""verify's results: a PASS/FAIL line per case (with what Envoy sent and received under a failing one), or
JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import document, reporter

if TYPE_CHECKING:
    from ..envoy import http
    from ..verify import CaseResult

ENVOY_LOG_LINES = 80  # per failing case in the text report


def _show(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "backslashreplace")


def _status(received: http.Received | None) -> int | None:
    return None if received is None else int(dict(received.headers)[":status"])


def case_record(r: CaseResult) -> dict[str, Any]:
    """A JSON-ready view with a fixed set of keys; bytes become text, undecodable bytes escaped."""
    exp = r.expected
    reply = None if r.local_reply is None else {
        "status": r.local_reply.status, "body": _show(r.local_reply.body), "details": r.local_reply.details}
    return {
        "kind": r.case.kind,
        "target": r.case.target,
        "name": r.name,
        "passed": r.passed,
        "failures": list(r.failures),
        "error": r.error,
        "sent": {"headers": [list(h) for h in r.sent.headers], "body": _show(r.sent.body),
                 "chunks": r.sent.chunks},
        "observed": {
            "configRejected": r.config_rejected,
            "upstreamReceived": r.upstream is not None,
            "requestHeaders": [list(h) for h in (r.upstream.headers if r.upstream else ())],
            "requestBody": _show(r.upstream.body) if r.upstream else None,
            "requestChunks": list(r.upstream.chunk_sizes) if r.upstream else [],
            "status": _status(r.response),
            "responseHeaders": [list(h) for h in (r.response.headers if r.response else ())],
            "responseBody": _show(r.response.body) if r.response else None,
            "responseChunks": list(r.response.chunk_sizes) if r.response else [],
            "localReply": reply,
            "paused": r.paused,
            "responseFlags": r.flags,
            "responseCodeDetails": r.details,
            "logs": list(r.logs),
            "envoyLog": list(r.envoy_log),
        },
        "expected": {
            "requestHeaders": [list(h) for h in exp.request_headers],
            "responseHeaders": [list(h) for h in exp.response_headers],
            "absentRequestHeaders": list(exp.absent_request_headers),
            "absentResponseHeaders": list(exp.absent_response_headers),
            "localReply": None if exp.local_reply is None
            else {"status": exp.local_reply.status, "body": exp.local_reply.body},
            "paused": exp.paused,
            "logs": list(exp.logs),
            "requestBody": exp.request_body,
            "responseBody": exp.response_body,
            "status": exp.status,
            "configRejected": exp.config_rejected,
        },
    }


@reporter("verify", "text")
def text_results(results: Sequence[CaseResult]) -> str:
    summary = _summary(results)
    lines: list[str] = []
    for result in results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'} {result.case.label}")
        if not result.passed:
            lines += _explain(result)
    # Worded so no CI log parser mistakes it for a test runner's "N passed, N failed" line.
    lines.append(f"{summary['total']} cases ({summary['passed']} passed, {summary['failed']} failed)")
    return "\n".join(lines) + "\n"


@reporter("verify", "json")
def json_results(results: Sequence[CaseResult]) -> str:
    return document({"cases": [case_record(r) for r in results], "summary": _summary(results)})


def _summary(results: Sequence[CaseResult]) -> dict[str, int]:
    passed = sum(1 for r in results if r.passed)
    return {"total": len(results), "passed": passed, "failed": len(results) - passed}


def _explain(result: CaseResult) -> list[str]:
    exp = result.expected
    out = [f"  - {failure}" for failure in result.failures]
    if result.config_rejected:
        return out
    out += ["  the client sent:", *_header_lines(result.sent.headers), *_body_line(result.sent.body, ())]
    if result.upstream is None:
        out.append("  the upstream received: nothing")
    else:
        out += ["  the upstream received:", *_header_lines(result.upstream.headers),
                *_body_line(result.upstream.body, result.upstream.chunk_sizes)]
    if result.response is None:
        out.append("  the client received: no complete response")
    else:
        out += ["  the client received:", *_header_lines(result.response.headers),
                *_body_line(result.response.body, result.response.chunk_sizes)]
    if exp.request_headers or exp.absent_request_headers or exp.response_headers or exp.absent_response_headers:
        out.append("  expected headers:")
        out += [f"    request {k.lower()}: {v}" for k, v in exp.request_headers]
        out += [f"    request {k.lower()}: (absent)" for k in exp.absent_request_headers]
        out += [f"    response {k.lower()}: {v}" for k, v in exp.response_headers]
        out += [f"    response {k.lower()}: (absent)" for k in exp.absent_response_headers]
    if result.flags or result.details:
        out.append(f"  Envoy: response flags {result.flags or '-'}, details {result.details or '-'}")
    if result.envoy_log:
        # Envoy traces every ABI call at trace level; the JSON report keeps them, the text shows the rest.
        lines = [e for e in result.envoy_log if not e.startswith(_ABI_TRACE)]
        shown = lines[-ENVOY_LOG_LINES:]
        notes = []
        if len(lines) < len(result.envoy_log):
            notes.append(f"{len(result.envoy_log) - len(lines)} ABI call traces left out, --format json has them")
        if len(shown) < len(lines):
            notes.append(f"the last {len(shown)} of {len(lines)} lines")
        out.append("  Envoy's log during the case" + (f" ({'; '.join(notes)})" if notes else "") + ":")
        out += [f"    {line}" for entry in shown for line in entry.splitlines()]
    return out


_ABI_TRACE = tuple(f"[trace][wasm] [{arrow}]" for arrow in ("host->vm", "host<-vm", "vm->host", "vm<-host"))


def _header_lines(headers: Sequence[tuple[str, str]]) -> list[str]:
    if not headers:
        return ["    (no headers)"]
    return [f"    {k}: {v}" for k, v in headers]


def _body_line(body: bytes | None, chunks: Sequence[int]) -> list[str]:
    if not body:
        return []
    pieces = f" in {len(chunks)} chunks ({', '.join(str(c) for c in chunks)} bytes)" if chunks else ""
    return [f"    body{pieces}: {json.dumps(body.decode('utf-8', 'backslashreplace'))}"]
