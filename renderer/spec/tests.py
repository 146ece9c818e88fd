"""The declared tests of a filter or a service: requests, canned responses and typed expectations."""

from __future__ import annotations

import re
from typing import Any

from .. import config_schema
from ..model import DEFAULTS, HttpMessageSpec, LocalReplySpec, TestExpect, TestSpec
from .context import Path_, SpecContext


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (raw or {}).items())


def _http_message(raw: Any) -> HttpMessageSpec:
    raw = raw or {}
    return HttpMessageSpec(_headers(raw.get("headers")), raw.get("body"), _headers(raw.get("trailers")),
                           raw.get("chunks"))


def _expect(raw: dict[str, Any]) -> TestExpect:
    reply = raw.get("localReply")
    return TestExpect(
        request_headers=_headers(raw.get("requestHeaders")),
        response_headers=_headers(raw.get("responseHeaders")),
        absent_request_headers=tuple(str(h) for h in raw.get("absentRequestHeaders", ())),
        absent_response_headers=tuple(str(h) for h in raw.get("absentResponseHeaders", ())),
        local_reply=LocalReplySpec(int(reply["status"]), reply.get("body")) if reply else None,
        paused=raw.get("paused", DEFAULTS.paused),
        logs=tuple(raw.get("logs", ())),
        request_body=raw.get("requestBody"),
        response_body=raw.get("responseBody"),
        status=raw.get("status"),
        config_rejected=bool(raw.get("configRejected", False)),
    )


def _check_expect(ctx: SpecContext, tp: Path_, expect: dict[str, Any]) -> None:
    for k, pattern in enumerate(expect.get("logs", [])):
        try:
            re.compile(pattern)
        except re.error as e:
            ctx.error(tp + ("expect", "logs", k), f"{pattern!r} is not a regular expression ({e}); "
                      "fix it (Python re syntax)")
    if expect.get("configRejected") and len(expect) > 1:
        ctx.error(tp + ("expect", "configRejected"), "configRejected: true means Envoy refuses the "
                  "listener, so no request is sent and nothing else can be checked; remove the "
                  f"other expectations ({', '.join(sorted(k for k in expect if k != 'configRejected'))}) "
                  "or this one")


def tests(ctx: SpecContext, p: Path_, raw: dict[str, Any], owner: str = "filter", *,
          schema: config_schema.ConfigSchema | None = None) -> tuple[TestSpec, ...]:
    seen: set[str] = set()
    out: list[TestSpec] = []
    for j, t in enumerate(raw.get("tests", [])):
        tp = p + ("tests", j)
        if t["name"] in seen:
            ctx.error(tp + ("name",), f"test name {t['name']!r} is used twice in this {owner}; make test names unique")
        seen.add(t["name"])
        expect = t.get("expect") or {}
        _check_expect(ctx, tp, expect)
        # A test that expects Envoy to refuse its configuration sends a wrong one on purpose.
        if schema is not None and not expect.get("configRejected"):
            ctx.check_config(tp + ("config",), t, "config", schema)
        out.append(TestSpec(
            name=t["name"],
            config=ctx.config_text(tp + ("config",), t.get("config")),
            request=_http_message(t.get("request")),
            response=_http_message(t.get("response")),
            expect=_expect(expect),
        ))
    return tuple(out)
