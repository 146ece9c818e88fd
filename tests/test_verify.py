"""`verify`: test cases from filters.yaml run through the embedded host, judged and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import wasmtime

from renderer.proxywasm import LocalReply
from renderer.verify import (
    CaseResult,
    Expectation,
    ExpectedLocalReply,
    FilterUnderTest,
    HttpMessage,
    VerifyCase,
    format_results,
    run_case,
    run_cases,
)

REPO = Path(__file__).resolve().parent.parent
MODULES = Path(__file__).resolve().parent / "modules"
EXAMPLE_FILTER = REPO / "filters" / "example-filter" / "example-filter.wasm"

PRODUCTPAGE = HttpMessage(headers=((":method", "GET"), (":path", "/productpage"), (":authority", "productpage")))
UPSTREAM_OK = HttpMessage(headers=((":status", "200"), ("server", "istio-envoy")), body=b"<html/>")


def wat_filter(name: str, **kwargs: object) -> FilterUnderTest:
    wasm = bytes(wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text()))
    return FilterUnderTest(name=name, wasm=wasm, **kwargs)  # type: ignore[arg-type]


def case(name: str, expect: Expectation, request: HttpMessage = PRODUCTPAGE, response: HttpMessage = UPSTREAM_OK) -> VerifyCase:
    return VerifyCase(name=name, request=request, response=response, expect=expect)


def with_header(name: str, value: str) -> HttpMessage:
    return HttpMessage(PRODUCTPAGE.headers + ((name, value),))


# ------------------------------------------------------------------ judging


def test_a_passing_case_reports_what_it_observed() -> None:
    result = run_case(
        wat_filter("cpp_sdk_env"),
        case(
            "adds headers",
            Expectation(
                request_headers=(("X-CPP-Added", "1"),),  # names are case-insensitive
                response_headers=(("resp-header-demo", "added by cpp"),),
                absent_request_headers=("x-remove-me",),
                absent_response_headers=("server",),
                logs=(r"^info: path: /productpage$", r"on_response_headers"),
                response_body=b"rewritten by cpp",
            ),
        ),
    )
    assert result.failures == ()
    assert result.passed
    assert result.request_headers == (
        (":method", "GET"),
        (":path", "/productpage"),
        (":authority", "productpage"),
        ("x-cpp-added", "1"),
        ("x-replace-me", "replaced"),  # replace adds a header that was not there, like Envoy's setCopy
    )
    assert result.response_headers == ((":status", "200"), ("resp-header-demo", "added by cpp"))
    assert result.paused == "none"
    assert result.error is None


def test_failures_say_what_was_expected_and_what_was_seen() -> None:
    result = run_case(
        wat_filter("cpp_sdk_env"),
        case(
            "wrong expectations",
            Expectation(
                request_headers=(("x-cpp-added", "2"), ("x-missing", "v")),
                response_headers=(("resp-header-demo", "added by our filter"),),
                absent_request_headers=("x-cpp-added",),
                logs=("never logged", "([unclosed"),
                request_body=b"other",
            ),
            request=HttpMessage(PRODUCTPAGE.headers, b"hi"),
        ),
    )
    assert not result.passed
    assert result.failures[:5] == (
        'request header x-cpp-added: expected "2", got "1"',
        'request header x-missing: expected "v", got (absent)',
        'request header x-cpp-added: expected absent, got "1"',
        'response header resp-header-demo: expected "added by our filter", got "added by cpp"',
        'request body: expected "other", got "<<hi>>"',
    )
    assert result.failures[5] == "no log line matches /never logged/"
    assert result.failures[6].startswith("log pattern '([unclosed' is not a valid regular expression: ")
    assert len(result.failures) == 7


def test_local_reply_expectations() -> None:
    deny = with_header("x-deny", "1")
    passing = run_case(
        wat_filter("cpp_sdk_env"),
        case(
            "denies",
            Expectation(
                local_reply=ExpectedLocalReply(403, b"access denied"),
                response_headers=((":status", "403"), ("x-deny-reason", "policy")),
            ),
            request=deny,
        ),
    )
    assert passing.failures == ()
    assert passing.local_reply == LocalReply(
        403, b"access denied", (("x-deny-reason", "policy"),), "denied_by_cpp", None, "request"
    )
    wrong = run_case(
        wat_filter("cpp_sdk_env"),
        case("denies differently", Expectation(local_reply=ExpectedLocalReply(401, b"nope")), request=deny),
    )
    assert wrong.failures == (
        "local reply status: expected 401, got 403",
        'local reply body: expected "nope", got "access denied"',
    )
    unexpected = run_case(wat_filter("cpp_sdk_env"), case("should pass through", Expectation(), request=deny))
    assert unexpected.failures == ("unexpected local reply 403 \"access denied\" (details 'denied_by_cpp')",)
    missing = run_case(wat_filter("cpp_sdk_env"), case("expects a reply", Expectation(local_reply=ExpectedLocalReply(403))))
    assert missing.failures == ("expected a local reply 403, but the filter sent none",)


def test_paused_expectations() -> None:
    paused_request = with_header("x-pause", "1")
    ok = run_case(wat_filter("cpp_sdk_env"), case("pauses", Expectation(paused="request"), request=paused_request))
    assert ok.failures == ()
    assert ok.response_headers == ()
    surprise = run_case(wat_filter("cpp_sdk_env"), case("does not expect a pause", Expectation(), request=paused_request))
    assert surprise.failures == (
        "paused: expected none, got request (the filter returned StopIteration and never resumed the stream)",
    )
    never = run_case(wat_filter("cpp_sdk_env"), case("expects a pause", Expectation(paused="response")))
    assert never.failures == ("paused: expected response, got none",)


def test_a_trap_fails_its_case_and_the_next_case_still_runs() -> None:
    results = run_cases(
        wat_filter("cpp_sdk_env"),
        [
            case("traps", Expectation(), request=with_header("x-trap", "1")),
            case("loops", Expectation(), request=with_header("x-loop", "1")),
            case("works", Expectation(response_headers=(("resp-header-demo", "added by cpp"),))),
        ],
    )
    assert [r.passed for r in results] == [False, False, True]
    assert results[0].failures[0].startswith(
        "error: wasm trap in proxy_on_request_headers: wasm `unreachable` instruction executed"
    )
    assert len(results[0].failures) == 1
    assert results[1].failures == (
        (
            "error: ran out of fuel in proxy_on_request_headers: the test case used more than "
            "500,000,000 units (an infinite loop?)"
        ),
    )


def test_a_module_that_does_not_load_fails_every_case() -> None:
    broken = FilterUnderTest(name="broken", wasm=b"not wasm at all")
    results = run_cases(broken, [case("a", Expectation()), case("b", Expectation())])
    assert [r.failures for r in results] == [
        ("cannot load broken: invalid wasm module: not a WebAssembly binary (no \\0asm header)",),
    ] * 2
    assert all(not r.passed for r in results)


def test_configuration_and_ids_reach_the_filter() -> None:
    result = run_case(
        wat_filter("cpp_sdk_env", root_id="root", vm_id="vm", plugin_config=b'{"x":1}', vm_config=b"vm-conf"),
        case("config", Expectation(logs=(r'^info: plugin config: \{"x":1\}$', r"^info: vm config: vm-conf$"))),
    )
    assert result.failures == ()
    rejected = run_case(
        wat_filter("cpp_sdk_env", plugin_config=b"!bad"),
        case("rejected config", Expectation()),
    )
    assert rejected.failures == ("error: proxy_on_configure returned false: the plugin rejected its configuration",)


def test_unimplemented_host_calls_are_reported_but_do_not_fail() -> None:
    result = run_case(
        wat_filter("rust_sdk"),
        case("rust", Expectation(logs=(r"unknown import status 12",)), response=HttpMessage(((":status", "200"),))),
    )
    assert result.passed
    assert result.unimplemented == ("proxy_new_shiny_call",)


def test_every_sdk_shape_runs_through_verify() -> None:
    expectations = {
        "cpp_sdk_wasi": Expectation(request_headers=(("x-started", "1"),), logs=(r"^info: hello from stdout$", r"^error: oops on stderr$")),
        "tinygo_sdk": Expectation(request_headers=(("x-go", "1"), (":path", "/rewritten")), response_headers=(("x-go-response", "1"),)),
        "abi_010": Expectation(request_headers=(("x-abi", "0.1.0"),), response_headers=(("x-abi-response", "0.1.0"),)),
    }
    for name, expect in expectations.items():
        result = run_case(wat_filter(name), case(name, expect))
        assert result.failures == (), name


# ------------------------------------------------------------------ reports


def _sample_results() -> list[tuple[str, CaseResult]]:
    filter = wat_filter("cpp_sdk_env")
    passing, failing = run_cases(
        filter,
        [
            case("adds the header", Expectation(response_headers=(("resp-header-demo", "added by cpp"),))),
            case("wrong header", Expectation(response_headers=(("resp-header-demo", "added by our filter"),))),
        ],
    )
    return [("demo", passing), ("demo", failing)]


def test_text_report() -> None:
    text = format_results(_sample_results(), "text")
    assert text == (
        "PASS demo/adds the header\n"
        "FAIL demo/wrong header\n"
        '  - response header resp-header-demo: expected "added by our filter", got "added by cpp"\n'
        "  request headers after the filter:\n"
        "    :method: GET\n"
        "    :path: /productpage\n"
        "    :authority: productpage\n"
        "    x-cpp-added: 1\n"
        "    x-replace-me: replaced\n"
        "  response headers seen by the client:\n"
        "    :status: 200\n"
        "    resp-header-demo: added by cpp\n"
        "  expected response headers:\n"
        "    resp-header-demo: added by our filter\n"
        "  logs:\n"
        "    trace: on_context_create root\n"
        "    debug: initialized=1\n"
        "    trace: on_vm_start\n"
        "    trace: on_configure\n"
        "    trace: on_context_create stream\n"
        "    trace: on_request_headers\n"
        "    info: path: /productpage\n"
        "    info: property request.path: /productpage\n"
        "    trace: on_response_headers\n"
        "    trace: on_response_body\n"
        "    trace: on_log\n"
        "    info: log path: /productpage\n"
        "    info: log status: 200\n"
        "    trace: on_done\n"
        "    trace: on_delete\n"
        "2 cases (1 passed, 1 failed)\n"
    )


def test_text_report_notes_unimplemented_calls_and_warnings() -> None:
    result = run_case(wat_filter("rust_sdk"), case("rust", Expectation(), response=HttpMessage(((":status", "200"),))))
    text = format_results([("rust", result)], "text")
    assert text.splitlines() == [
        "PASS rust/rust",
        "  note: unimplemented host call proxy_new_shiny_call",
        (
            "  warning: Envoy provides no env.proxy_new_shiny_call and would refuse to load this module "
            "(missing import); here it answers Unimplemented"
        ),
        "1 cases (1 passed, 0 failed)",
    ]


def test_json_report_is_stable_and_complete() -> None:
    first = format_results(_sample_results(), "json")
    second = format_results(_sample_results(), "json")
    assert first == second
    data = json.loads(first)
    assert list(data) == ["cases", "summary"]  # sort_keys
    assert data["summary"] == {"failed": 1, "passed": 1, "total": 2}
    failing = data["cases"][1]
    assert failing["filter"] == "demo"
    assert failing["name"] == "wrong header"
    assert failing["passed"] is False
    assert failing["failures"] == ['response header resp-header-demo: expected "added by our filter", got "added by cpp"']
    assert failing["observed"]["responseHeaders"] == [[":status", "200"], ["resp-header-demo", "added by cpp"]]
    assert failing["observed"]["responseBody"] == "rewritten by cpp"
    assert failing["expected"]["responseHeaders"] == [["resp-header-demo", "added by our filter"]]
    assert failing["expected"]["paused"] == "none"
    assert failing["unimplementedHostCalls"] == []


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        format_results([], "yaml")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the real example filter


@pytest.mark.skipif(not EXAMPLE_FILTER.exists(), reason="filters/example-filter/example-filter.wasm is not built yet")
def test_the_example_filter_with_its_default_configuration() -> None:
    example = FilterUnderTest(name="example-filter", wasm=EXAMPLE_FILTER.read_bytes(), root_id="", vm_id="")
    result = run_case(
        example,
        case(
            "adds the demo header",
            Expectation(
                response_headers=(("resp-header-demo", "added by our filter"),),
                request_headers=((":path", "/productpage"),),
            ),
        ),
    )
    assert result.failures == ()
    assert result.response_headers == (
        (":status", "200"),
        ("server", "istio-envoy"),
        ("resp-header-demo", "added by our filter"),
    )
    assert result.unimplemented == ()
    assert result.warnings == ()


@pytest.mark.skipif(not EXAMPLE_FILTER.exists(), reason="filters/example-filter/example-filter.wasm is not built yet")
def test_the_example_filter_with_a_custom_configuration() -> None:
    example = FilterUnderTest(
        name="example-filter",
        wasm=EXAMPLE_FILTER.read_bytes(),
        plugin_config=json.dumps({"header": "x-custom", "value": "from config"}).encode(),
    )
    results = run_cases(
        example,
        [
            case(
                "adds the configured header",
                Expectation(
                    response_headers=(("x-custom", "from config"),),
                    absent_response_headers=("resp-header-demo",),
                ),
            ),
            case("runs again in a fresh VM", Expectation(response_headers=(("x-custom", "from config"),))),
        ],
    )
    assert [r.failures for r in results] == [(), ()]


@pytest.mark.skipif(not EXAMPLE_FILTER.exists(), reason="filters/example-filter/example-filter.wasm is not built yet")
def test_the_example_filter_rejects_a_configuration_that_is_not_an_object() -> None:
    example = FilterUnderTest(name="example-filter", wasm=EXAMPLE_FILTER.read_bytes(), plugin_config=b"[1, 2]")
    result = run_case(example, case("bad config", Expectation()))
    assert result.failures == ("error: proxy_on_configure returned false: the plugin rejected its configuration",)
    assert any(line.startswith("warn: example-filter: rejecting plugin configuration") for line in result.logs)
