"""The embedded proxy-wasm host against modules shaped like the common SDKs' builds.

The real SDKs cannot be built here, so tests/modules/*.wat reproduce what their builds export,
import and call, in the same order. Assertions are on exact observed values.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from renderer.proxywasm import (
    AbiVersion,
    CompiledModule,
    ExchangeResult,
    HostOptions,
    HttpMessage,
    LocalReply,
    ModuleLoadError,
    PluginSpec,
    PluginVM,
    SharedStores,
    compile_module,
    get_engine,
    parse_pairs,
    run_http_exchange,
    serialize_pairs,
)
from renderer.proxywasm.host import HeaderMap
from renderer.proxywasm.properties import PropertyTree, split_path

MODULES = Path(__file__).resolve().parent / "modules"

REQUEST = HttpMessage(
    headers=(
        (":method", "GET"),
        (":path", "/productpage"),
        (":authority", "productpage"),
        ("x-replace-me", "old"),
        ("x-remove-me", "bye"),
    ),
    body=b"hello",
)
RESPONSE = HttpMessage(
    headers=((":status", "200"), ("server", "istio-envoy"), ("content-type", "text/html")),
    body=b"<html/>",
)
OK = HttpMessage(headers=((":status", "200"),))
FIXED_CLOCK = HostOptions(clock_ns=lambda: 1_700_000_000_000_000_000)


def module(name: str) -> CompiledModule:
    return compile_module(bytes(wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text())))


def inline(wat: str) -> CompiledModule:
    return compile_module(bytes(wasmtime.wat2wasm(wat)))


def run(
    name: str | CompiledModule,
    request: HttpMessage = REQUEST,
    response: HttpMessage = RESPONSE,
    *,
    plugin: PluginSpec | None = None,
    options: HostOptions | None = None,
    shared: SharedStores | None = None,
) -> ExchangeResult:
    compiled = module(name) if isinstance(name, str) else name
    return run_http_exchange(
        compiled, plugin or PluginSpec("test-filter"), request, response, options=options, shared=shared
    )


def with_headers(*extra: tuple[str, str]) -> HttpMessage:
    return HttpMessage(REQUEST.headers + extra, REQUEST.body, REQUEST.trailers)


# ------------------------------------------------------------------ serialization and maps


def test_pairs_serialization_matches_the_spec_example() -> None:
    data = serialize_pairs([(b"a", b"1"), (b"b", b"22")])
    assert data == (
        b"\x02\x00\x00\x00"
        b"\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00"
        b"a\x001\x00b\x0022\x00"
    )
    assert parse_pairs(data) == [(b"a", b"1"), (b"b", b"22")]


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=12))
def test_pairs_round_trip_whatever_the_bytes(pairs: list[tuple[bytes, bytes]]) -> None:
    # Lengths drive the parsing, so NULs inside keys or values survive the trip.
    assert parse_pairs(serialize_pairs(pairs)) == pairs


def test_malformed_pairs_parse_as_no_pairs_like_envoy() -> None:
    assert parse_pairs(b"") == []
    assert parse_pairs(b"\x05\x00\x00\x00") == []  # five pairs announced, no sizes
    assert parse_pairs(b"\x01\x00\x00\x00\x09\x00\x00\x00\x01\x00\x00\x00ab\x00") == []  # short body


def test_header_map_keeps_pseudo_headers_first_and_lowercases_keys() -> None:
    headers = HeaderMap([(b"X-A", b"1"), (b":path", b"/"), (b"x-b", b"2")])
    headers.add(b":method", b"GET")
    headers.replace(b"x-a", b"3")  # setCopy: old values go, the new one is appended
    assert headers.pairs == [(b":path", b"/"), (b":method", b"GET"), (b"x-b", b"2"), (b"x-a", b"3")]
    assert headers.byte_size() == len(":path/:methodGETx-b2x-a3")


def test_property_path_splitting_accepts_both_sdk_styles() -> None:
    assert split_path(b"request\x00path") == [b"request", b"path"]  # Rust, Go
    assert split_path(b"request\x00path\x00") == [b"request", b"path"]  # C++
    tree = PropertyTree({})
    assert tree.set(b"state", b"v") == 0
    assert tree.get(b"state") == (0, b"v")
    assert tree.get(b"state\x00deeper") == (1, b"")


# ------------------------------------------------------------------ module loading


def test_abi_versions_are_detected_from_the_marker_exports() -> None:
    assert module("cpp_sdk_env").abi is AbiVersion.V0_2_1
    assert module("rust_sdk").abi is AbiVersion.V0_2_1
    assert module("tinygo_sdk").abi is AbiVersion.V0_2_0
    assert module("abi_010").abi is AbiVersion.V0_1_0
    assert module("legacy_no_marker").abi is AbiVersion.LEGACY


def test_the_engine_is_shared_and_compiled_modules_are_cached() -> None:
    assert get_engine() is get_engine()
    assert module("cpp_sdk_env") is module("cpp_sdk_env")


def test_invalid_bytes_and_non_proxy_wasm_modules_are_load_errors() -> None:
    with pytest.raises(ModuleLoadError, match="invalid wasm module"):
        compile_module(b"\x00asm\x01\x00\x00\x00garbage")
    with pytest.raises(ModuleLoadError, match="not a proxy-wasm module"):
        inline('(module (func (export "hello")))')


def test_a_module_without_an_allocator_fails_like_envoy() -> None:
    compiled = inline(
        '(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))'
        ' (func (export "proxy_on_context_create") (param i32 i32)))'
    )
    result = run(compiled)
    assert result.error == "Wasm module is missing malloc function (export malloc or proxy_on_memory_allocate)"
    assert result.response is None


def test_a_module_without_a_marker_runs_as_abi_010_with_a_warning() -> None:
    result = run("legacy_no_marker", HttpMessage(((":path", "/"),)), OK)
    assert result.error is None
    assert result.abi_version == "legacy"
    assert result.request.headers == ((":path", "/"), ("x-legacy", "yes"))
    assert result.warnings == (
        (
            "module exports no proxy_abi_version_* marker; run as ABI 0.1.0, but Envoy refuses to load it "
            '("Missing or unknown Proxy-Wasm ABI version")'
        ),
    )


# ------------------------------------------------------------------ C++ SDK shape (env only)


def test_cpp_style_module_full_exchange() -> None:
    shared = SharedStores()
    result = run(
        "cpp_sdk_env",
        plugin=PluginSpec("cpp", root_id="root", vm_id="vm", plugin_config=b'{"a":1}', vm_config=b"vmcfg"),
        shared=shared,
    )
    assert result.error is None
    assert result.request == HttpMessage(
        headers=(
            (":method", "GET"),
            (":path", "/productpage"),
            (":authority", "productpage"),
            ("x-cpp-added", "1"),
            ("x-replace-me", "replaced"),
        ),
        body=b"<<hello>>",
        trailers=(),
    )
    assert result.response == HttpMessage(
        headers=((":status", "200"), ("content-type", "text/html"), ("resp-header-demo", "added by cpp")),
        body=b"rewritten by cpp",
        trailers=(),
    )
    assert result.paused == "none"
    assert result.local_reply is None
    # The life cycle in Envoy's order: _initialize ran before the root context was created,
    # on_log comes before on_done and on_delete.
    assert result.logs == (
        "trace: on_context_create root",
        "debug: initialized=1",
        "trace: on_vm_start",
        "info: vm config: vmcfg",
        "trace: on_configure",
        'info: plugin config: {"a":1}',
        "trace: on_context_create stream",
        "trace: on_request_headers",
        "info: path: /productpage",
        "info: property request.path: /productpage",
        "trace: on_request_body",
        "info: request body: hello",
        "trace: on_response_headers",
        "trace: on_response_body",
        "trace: on_log",
        "info: log path: /productpage",
        "info: log status: 200",
        "trace: on_done",
        "trace: on_delete",
    )
    # proxy_get_header_map_pairs returned exactly Envoy's serialization of the map at that time.
    pairs, _ = shared.get(b"vm", b"req-pairs") or (b"", 0)
    assert pairs == serialize_pairs(
        [
            (b":method", b"GET"),
            (b":path", b"/productpage"),
            (b":authority", b"productpage"),
            (b"x-cpp-added", b"1"),
            (b"x-replace-me", b"replaced"),
        ]
    )
    size, _ = shared.get(b"vm", b"req-size") or (b"", 0)
    assert struct.unpack("<I", size) == (len(":methodGET:path/productpage:authorityproductpagex-cpp-added1x-replace-mereplaced"),)
    assert result.unimplemented == ()
    assert result.warnings == ()


def test_local_reply_from_request_headers_goes_through_the_filters_response_callbacks() -> None:
    result = run("cpp_sdk_env", with_headers(("x-deny", "1")))
    assert result.error is None
    assert result.local_reply == LocalReply(
        status=403,
        body=b"access denied",
        headers=(("x-deny-reason", "policy"),),
        details="denied_by_cpp",
        grpc_status=None,
        phase="request",
    )
    # Envoy's sendLocalReply builds these headers; the filter's own on_response_* then ran on
    # them, and the declared upstream response (server: istio-envoy, <html/>) was never used.
    assert result.response == HttpMessage(
        headers=(
            (":status", "403"),
            ("x-deny-reason", "policy"),
            ("content-length", "13"),
            ("content-type", "text/plain"),
            ("resp-header-demo", "added by cpp"),
        ),
        body=b"rewritten by cpp",
        trailers=(),
    )
    assert result.paused == "none"
    assert "trace: on_request_body" not in result.logs
    assert result.logs[-7:] == (
        "trace: on_response_headers",
        "trace: on_response_body",
        "trace: on_log",
        "info: log path: /productpage",
        "info: log status: 403",
        "trace: on_done",
        "trace: on_delete",
    )


def test_a_paused_request_never_reaches_upstream() -> None:
    result = run("cpp_sdk_env", with_headers(("x-pause", "1")))
    assert result.error is None
    assert result.paused == "request"
    assert result.response is None
    # StopIteration from headers is StopAllIteration in Envoy: no body callback either.
    assert result.logs[-7:] == (
        "trace: on_context_create stream",
        "trace: on_request_headers",
        "info: path: /productpage",
        "trace: on_log",
        "info: log path: /productpage",
        "trace: on_done",
        "trace: on_delete",
    )


def test_a_trap_fails_the_run_and_the_next_run_is_unaffected() -> None:
    compiled = module("cpp_sdk_env")
    trapped = run(compiled, with_headers(("x-trap", "1")))
    assert trapped.error is not None
    assert trapped.error.startswith(
        "wasm trap in proxy_on_request_headers: wasm `unreachable` instruction executed (at 0: 0x"
    )
    assert trapped.logs[-1] == "info: path: /productpage"  # nothing ran after the trap
    again = run(compiled)
    assert again.error is None
    assert again.response is not None and ("resp-header-demo", "added by cpp") in again.response.headers


def test_an_infinite_loop_runs_out_of_fuel() -> None:
    started = time.monotonic()
    result = run("cpp_sdk_env", with_headers(("x-loop", "1")), options=HostOptions(fuel=20_000_000))
    assert result.error == (
        "ran out of fuel in proxy_on_request_headers: the test case used more than 20,000,000 units "
        "(an infinite loop?)"
    )
    assert time.monotonic() - started < 5


def test_the_default_fuel_bounds_an_infinite_loop_quickly() -> None:
    started = time.monotonic()
    result = run("cpp_sdk_env", with_headers(("x-loop", "1")))
    assert result.error is not None and result.error.startswith("ran out of fuel in proxy_on_request_headers")
    assert time.monotonic() - started < 10


def test_a_loop_of_host_calls_is_bounded_by_the_deadline() -> None:
    compiled = inline(
        """(module
          (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "malloc") (param i32) (result i32) (i32.const 1024))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (loop $l (drop (call $level (i32.const 0))) (br $l)) (i32.const 0)))"""
    )
    result = run(compiled, options=HostOptions(deadline_seconds=0.3, fuel=10**15))
    assert result.error == "ran out of time: the test case took longer than 0.3 s (a loop of host calls?)"


def test_a_rejected_configuration_fails_the_start() -> None:
    result = run("cpp_sdk_env", plugin=PluginSpec("cpp", plugin_config=b"!invalid"))
    assert result.error == "proxy_on_configure returned false: the plugin rejected its configuration"
    assert result.logs[-1] == "info: plugin config: !invalid"
    assert result.response is None


def test_host_calls_other_than_proxy_log_are_refused_while_the_module_starts() -> None:
    compiled = inline(
        """(module
          (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
          (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "init")
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "malloc") (param i32) (result i32) (i32.const 1024))
          (func (export "_initialize")
            (drop (call $log (i32.const 2) (i32.const 16) (i32.const 4)))
            (drop (call $tick (i32.const 10)))))"""
    )
    result = run(compiled)
    assert result.logs == ("info: init",)
    assert result.error == (
        "restricted_callback: proxy_set_tick_period_milliseconds called while the module starts "
        "(_initialize/_start/main); Envoy only allows proxy_log and WASI stdio/args/environ/clock/random there"
    )


# ------------------------------------------------------------------ C++ with WASI, _start + proc_exit(0)


def test_cpp_wasi_command_module_stdout_stderr_clock_random_environ() -> None:
    result = run("cpp_sdk_wasi", HttpMessage(((":path", "/"),)), OK, plugin=PluginSpec("wasi-filter"))
    assert result.error is None  # _start ended with proc_exit(0): a normal return
    assert result.logs == ("info: started in _start", "info: hello from stdout", "error: oops on stderr")
    assert result.request.headers == (
        (":path", "/"),
        ("x-clock", "set"),
        ("x-env-count", "0"),  # no environment is passed to the guest
        ("x-random-errno", "0"),
        ("x-plugin-name", "wasi-filter"),
        ("x-started", "1"),
    )


def test_proc_exit_with_a_failure_code_fails_the_start() -> None:
    compiled = inline(
        """(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "malloc") (param i32) (result i32) (i32.const 1024))
          (func (export "_start") (call $exit (i32.const 3))))"""
    )
    assert run(compiled).error == "_start called proc_exit(3)"


def test_wasi_unstable_imports_are_served_like_preview1() -> None:
    compiled = inline(
        """(module
          (import "wasi_unstable" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_unstable" "random_get" (func $random (param i32 i32) (result i32)))
          (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "old wasi\\n")
          (data (i32.const 120) "x-errno0")
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "malloc") (param i32) (result i32) (i32.const 4096))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 9))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (i32.store8 (i32.const 127) (i32.add (i32.const 48) (call $random (i32.const 200) (i32.const 16))))
            (drop (call $add (i32.const 0) (i32.const 120) (i32.const 7) (i32.const 127) (i32.const 1)))
            (i32.const 0)))"""
    )
    result = run(compiled, HttpMessage(((":path", "/"),)), OK)
    assert result.error is None
    assert result.logs == ("info: old wasi",)
    assert result.request.headers == ((":path", "/"), ("x-errno", "0"))


# ------------------------------------------------------------------ Rust SDK shape


def test_rust_style_module_shared_data_queues_metrics_properties() -> None:
    shared = SharedStores()
    result = run(
        "rust_sdk",
        HttpMessage(((":path", "/"),)),
        OK,
        plugin=PluginSpec("rust", vm_id="vm1", plugin_config=b'{"k":"v"}'),
        shared=shared,
        options=FIXED_CLOCK,
    )
    assert result.error is None
    assert result.request.headers == ((":path", "/"), ("x-counter", "0"), ("x-source", "10.0.0.1:51000"))
    assert result.logs == (
        'info: config: {"k":"v"}',  # read with max_size = usize::MAX
        "debug: log level 0",
        "debug: resolved queue 1",
        "info: cas update status 0",
        "info: stale cas status 8",  # CasMismatch
        "warn: unknown import status 12",  # Unimplemented
        "info: queue item: request seen",  # proxy_on_queue_ready runs after the enqueuing callback
        "info: println from rust",
    )
    assert result.tick_period_ms == 250
    assert result.metrics == (("requests_total", 1),)
    assert result.unimplemented == ("proxy_new_shiny_call",)
    assert result.warnings == (
        (
            "Envoy provides no env.proxy_new_shiny_call and would refuse to load this module "
            "(missing import); here it answers Unimplemented"
        ),
    )
    assert shared.get(b"vm1", b"counter") == (b"1", 2)
    assert shared.queues[1].items == []


def test_shared_data_is_shared_between_vms_given_the_same_store() -> None:
    shared = SharedStores()
    plugin = PluginSpec("rust", vm_id="vm1")
    first = run("rust_sdk", HttpMessage(((":path", "/"),)), OK, plugin=plugin, shared=shared)
    second = run("rust_sdk", HttpMessage(((":path", "/"),)), OK, plugin=plugin, shared=shared)
    # on_configure of the second VM reset the counter to "0", then its request read it.
    assert ("x-counter", "0") in first.request.headers and ("x-counter", "0") in second.request.headers
    other_vm = run("rust_sdk", HttpMessage(((":path", "/"),)), OK, plugin=PluginSpec("rust", vm_id="vm2"), shared=shared)
    assert other_vm.error is None
    assert set(shared.data) == {(b"vm1", b"counter"), (b"vm2", b"counter")}


def test_a_request_paused_in_headers_is_resumed_from_proxy_on_tick() -> None:
    result = run("rust_sdk", HttpMessage(((":path", "/"), ("x-wait", "1"))), OK, plugin=PluginSpec("rust"))
    assert result.error is None
    assert result.paused == "none"
    assert result.response == OK
    assert result.logs[-3:] == ("debug: tick", "info: resumed request of context 2", "info: println from rust")


def test_ticks_are_bounded_when_nothing_resumes_the_stream() -> None:
    result = run("rust_sdk", HttpMessage(((":path", "/"), ("x-wait", "1"))), OK, options=HostOptions(max_ticks=0))
    assert result.paused == "request"
    assert "debug: tick" not in result.logs


# ------------------------------------------------------------------ TinyGo / Go SDK shape


def test_tinygo_style_module_pairs_bodies_and_released_headers() -> None:
    shared = SharedStores()
    request = HttpMessage(((":path", "/"), (":method", "POST"), ("x-a", "b")), b"payload")
    result = run("tinygo_sdk", request, OK, plugin=PluginSpec("go", plugin_config=b"cfg"), shared=shared)
    assert result.error is None
    assert result.abi_version == "0.2.0"
    assert result.request == HttpMessage(
        headers=((":method", "GET"), (":path", "/rewritten"), ("x-go", "1")),
        body=b"payload [go]",
        trailers=(),
    )
    assert result.response == HttpMessage(((":status", "200"), ("x-go-response", "1")), None, ())
    assert result.logs == (
        "info: main: SetVMContext",  # stdout from _start, which returned normally
        "info: config: cfg",
        # Envoy drops request_headers_ once on_request_headers returned Continue: BadArgument.
        "info: request headers status in body callback: 2",
        "info: OnHttpStreamDone",
    )
    assert shared.get(b"", b"go-pairs") == (
        serialize_pairs([(b":path", b"/"), (b":method", b"POST"), (b"x-a", b"b")]),
        1,
    )


def test_tinygo_style_local_reply_from_the_body_callback() -> None:
    request = HttpMessage(((":path", "/"), (":method", "POST")), b"no thanks")
    result = run("tinygo_sdk", request, RESPONSE)
    assert result.local_reply == LocalReply(401, b"go says no", (), "", None, "request")
    assert result.response == HttpMessage(
        ((":status", "401"), ("content-length", "10"), ("content-type", "text/plain"), ("x-go-response", "1")),
        b"go says no",
        (),
    )
    assert result.request.body == b"no thanks"


# ------------------------------------------------------------------ ABI 0.1.0


def test_abi_010_two_argument_callbacks_configuration_and_missing_headers() -> None:
    result = run("abi_010", HttpMessage(((":path", "/"),)), OK, plugin=PluginSpec("old", plugin_config=b"cfg010"))
    assert result.error is None
    assert result.warnings == ()  # the two-parameter callbacks are what ABI 0.1.0 expects
    assert result.logs == (
        "info: configuration: cfg010",
        "info: missing header status 0",  # 0.1.0: a missing header is Ok ...
        "info: missing header size 0",  # ... with an empty value
    )
    assert result.request.headers == ((":path", "/"), ("x-abi", "0.1.0"))
    assert result.response == HttpMessage(((":status", "200"), ("x-abi-response", "0.1.0")), None, ())


def test_abi_010_continue_request_from_the_pausing_callback_resumes() -> None:
    result = run("abi_010", HttpMessage(((":path", "/"), ("x-pause-continue", "1"))), OK)
    assert result.paused == "none"
    assert result.response == HttpMessage(((":status", "200"), ("x-abi-response", "0.1.0")), None, ())


# ------------------------------------------------------------------ unknown imports and ABI mismatches


def test_unknown_imports_of_any_shape_answer_unimplemented() -> None:
    compiled = inline(
        """(module
          (import "env" "mystery_i64" (func $a (param i32) (result i64)))
          (import "env" "mystery_void" (func $b))
          (import "other" "thing" (func $c (result i32)))
          (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 100) "x-status")
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "malloc") (param i32) (result i32) (i32.const 4096))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (drop (call $a (i32.const 1)))
            (call $b)
            (i32.store8 (i32.const 120) (i32.add (i32.const 48) (i32.sub (call $c) (i32.const 10))))
            (drop (call $add (i32.const 0) (i32.const 100) (i32.const 8) (i32.const 120) (i32.const 1)))
            (i32.const 0)))"""
    )
    result = run(compiled, HttpMessage(((":path", "/"),)), OK)
    assert result.error is None
    assert result.unimplemented == ("mystery_i64", "mystery_void", "other.thing")
    assert result.request.headers == ((":path", "/"), ("x-status", "2"))  # 12 - 10


def test_an_abi_specific_import_outside_its_abi_is_warned_about() -> None:
    compiled = inline(
        """(module
          (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "proxy_abi_version_0_2_0"))
          (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024)))"""
    )
    result = run(compiled)
    assert result.error is None
    assert result.warnings == (
        (
            "Envoy does not provide env.proxy_get_log_level to ABI 0.2.0 modules and would refuse to "
            "load this module (missing import)"
        ),
    )


# ------------------------------------------------------------------ stream control details

RESPONSE_REPLY_WAT = """(module
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "upstream failed")
  (data (i32.const 120) "x-seen")
  (data (i32.const 130) "1")
  (data (i32.const 140) "x-reset")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 140) (i32.const 7) (i32.const 0) (i32.const 4)))
      (then (drop (call $close (i32.const 0)))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 120) (i32.const 6) (i32.const 130) (i32.const 1)))
    (drop (call $reply (i32.const 502) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 15)
      (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    unreachable))"""


def test_a_local_reply_from_the_response_phase_goes_straight_to_the_client() -> None:
    result = run(inline(RESPONSE_REPLY_WAT), HttpMessage(((":path", "/"),)), RESPONSE)
    assert result.error is None  # on_response_body (which traps) never ran: the chain stopped
    assert result.local_reply == LocalReply(502, b"upstream failed", (), "", None, "response")
    # sendDirectLocalReply: no filter sees this reply, so no x-seen header on it.
    assert result.response == HttpMessage(
        ((":status", "502"), ("content-length", "15"), ("content-type", "text/plain")), b"upstream failed", ()
    )


def test_close_stream_resets_the_stream() -> None:
    result = run(inline(RESPONSE_REPLY_WAT), HttpMessage(((":path", "/"), ("x-reset", "1"))), RESPONSE)
    assert result.error is None
    assert result.reset is True
    assert result.response is None


def test_trailers_pass_through_and_callbacks_without_exports_continue() -> None:
    request = HttpMessage(((":path", "/"),), b"body", (("x-trailer", "t"),))
    response = HttpMessage(((":status", "200"),), b"resp", (("grpc-status", "0"),))
    result = run("cpp_sdk_env", request, response)
    assert result.error is None
    assert result.request.trailers == (("x-trailer", "t"),)
    assert result.response is not None and result.response.trailers == (("grpc-status", "0"),)
    # with trailers, the body callbacks are not the end of the stream: no prepend/append/rewrite
    assert result.request.body == b"body"
    assert result.response.body == b"resp"


def test_vm_state_can_be_driven_step_by_step() -> None:
    vm = PluginVM(module("rust_sdk"), PluginSpec("rust"), options=FIXED_CLOCK)
    try:
        vm.start()
        assert vm.tick_period_ms == 250
        vm.tick()
        assert vm.logs[-1] == "debug: tick"
        assert vm.now_ns() == 1_700_000_000_000_000_000 + 250_000_000
        result = vm.http_exchange(HttpMessage(((":path", "/"),)), OK)
        assert result.error is None
    finally:
        vm.close()


# ------------------------------------------------------------------ properties

PROBE_REQUEST = HttpMessage(
    ((":method", "GET"), (":path", "/p?q=1"), (":authority", "svc"), ("x-a", "1"), ("x-a", "2"))
)

INT200 = struct.pack("<q", 200)


@pytest.mark.parametrize(
    ("path", "configure", "request_phase", "response_phase", "log_phase"),
    [
        (b"request\x00path", (1, b""), (0, b"/p?q=1"), (1, b""), (0, b"/p?q=1")),
        (b"request\x00path\x00", (1, b""), (0, b"/p?q=1"), (1, b""), (0, b"/p?q=1")),
        (b"request\x00url_path", (1, b""), (0, b"/p"), (1, b""), (0, b"/p")),
        (b"request\x00query", (1, b""), (0, b"q=1"), (1, b""), (0, b"q=1")),
        (b"request\x00method", (1, b""), (0, b"GET"), (1, b""), (0, b"GET")),
        (b"request\x00host", (1, b""), (0, b"svc"), (1, b""), (0, b"svc")),
        (b"request\x00headers\x00x-a", (1, b""), (0, b"1,2"), (1, b""), (0, b"1,2")),
        (
            b"request\x00headers",
            (1, b""),
            (0, serialize_pairs([(b":method", b"GET"), (b":path", b"/p?q=1"), (b":authority", b"svc"), (b"x-a", b"1"), (b"x-a", b"2")])),
            (0, b"\x00\x00\x00\x00"),
            (0, serialize_pairs([(b":method", b"GET"), (b":path", b"/p?q=1"), (b":authority", b"svc"), (b"x-a", b"1"), (b"x-a", b"2")])),
        ),
        (b"request\x00time", (1, b""), (0, struct.pack("<q", 5)), (0, struct.pack("<q", 5)), (0, struct.pack("<q", 5))),
        (b"response\x00code", (1, b""), (1, b""), (0, INT200), (0, INT200)),
        (b"response\x00code_details", (1, b""), (1, b""), (0, b"via_upstream"), (0, b"via_upstream")),
        (b"source\x00address", (1, b""), (0, b"10.0.0.1:51000"), (0, b"10.0.0.1:51000"), (0, b"10.0.0.1:51000")),
        (b"source\x00port", (1, b""), (0, struct.pack("<q", 51000)), (0, struct.pack("<q", 51000)), (0, struct.pack("<q", 51000))),
        (b"destination\x00address", (1, b""), (0, b"10.0.0.2:8080"), (0, b"10.0.0.2:8080"), (0, b"10.0.0.2:8080")),
        (b"connection\x00mtls", (1, b""), (0, b"\x00"), (0, b"\x00"), (0, b"\x00")),
        (b"connection_id", (1, b""), (0, struct.pack("<Q", 1)), (0, struct.pack("<Q", 1)), (0, struct.pack("<Q", 1))),
        (b"plugin_name", (0, b"probe"), (0, b"probe"), (0, b"probe"), (0, b"probe")),
        (b"plugin_root_id", (0, b"rid"), (0, b"rid"), (0, b"rid"), (0, b"rid")),
        (b"plugin_vm_id", (0, b"vmid"), (0, b"vmid"), (0, b"vmid"), (0, b"vmid")),
        (b"listener_direction", (0, struct.pack("<q", 1)), (0, struct.pack("<q", 1)), (0, struct.pack("<q", 1)), (0, struct.pack("<q", 1))),
        (b"node\x00metadata\x00NAME", (0, b"reviews"), (0, b"reviews"), (0, b"reviews"), (0, b"reviews")),
        (b"my_state", (1, b""), (0, b"set by filter"), (0, b"set by filter"), (0, b"set by filter")),
        (b"request", (1, b""), (3, b""), (3, b""), (3, b"")),  # SerializationFailure
        (b"nope", (1, b""), (1, b""), (1, b""), (1, b"")),
        (b"", (1, b""), (1, b""), (1, b""), (1, b"")),
    ],
)
def test_properties(
    path: bytes,
    configure: tuple[int, bytes],
    request_phase: tuple[int, bytes],
    response_phase: tuple[int, bytes],
    log_phase: tuple[int, bytes],
) -> None:
    shared = SharedStores()
    options = HostOptions(clock_ns=lambda: 5, properties=(("node.metadata.NAME", b"reviews"),))
    result = run(
        "property_probe",
        PROBE_REQUEST,
        OK,
        plugin=PluginSpec("probe", root_id="rid", vm_id="vmid", plugin_config=path),
        options=options,
        shared=shared,
    )
    assert result.error is None

    def seen(phase: str) -> tuple[int, bytes]:
        status = shared.get(b"vmid", f"{phase}:status".encode())
        value = shared.get(b"vmid", f"{phase}:value".encode())
        assert status is not None and value is not None
        return status[0][0], value[0]

    assert seen("configure") == configure
    assert seen("request") == request_phase
    assert seen("response") == response_phase
    assert seen("log") == log_phase
    set_status = shared.get(b"vmid", b"set:status")
    assert set_status is not None and set_status[0] == b"\x00"  # proxy_set_property from a stream


# ------------------------------------------------------------------ speed


def test_a_case_costs_milliseconds_not_seconds() -> None:
    compiled = module("cpp_sdk_env")
    run(compiled)  # warm the caches
    started = time.perf_counter()
    for _ in range(20):
        assert run(compiled).error is None
    per_case = (time.perf_counter() - started) / 20
    assert per_case < 0.25, f"{per_case * 1000:.1f} ms per case"


def test_an_imported_memory_is_the_guests_memory() -> None:
    compiled = inline(
        """(module
          (import "env" "memory" (memory 1))
          (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
          (data (i32.const 16) "from imported memory")
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "malloc") (param i32) (result i32) (i32.const 1024))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (drop (call $log (i32.const 2) (i32.const 16) (i32.const 20))) (i32.const 0)))"""
    )
    result = run(compiled, HttpMessage(((":path", "/"),)), OK)
    assert result.logs == ("info: from imported memory",)
    assert result.warnings == ("module imports memory env.memory; the host made a fresh one",)


# One status per host call, as the letter "a" + status (a=Ok, b=NotFound, c=BadArgument,
# g=InvalidMemoryAccess, h=Empty, m=Unimplemented), collected into the header x-statuses.
STATUS_WAT = """(module
  (import "env" "proxy_done" (func $done (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (data (i32.const 100) "x-statuses")
  (data (i32.const 120) "q")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096))
  (func $note (param $status i32)
    (i32.store8 (i32.add (i32.const 200) (global.get $n)) (i32.add (i32.const 97) (local.get $status)))
    (global.set $n (i32.add (global.get $n) (i32.const 1))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $note (call $done))                                                          ;; b
    (call $note (call $effective (i32.const 999)))                                     ;; c
    (call $note (call $continue (i32.const 9)))                                        ;; c
    (call $note (call $continue (i32.const 3)))                                        ;; m
    (call $note (call $buffer (i32.const 99) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 4))) ;; c
    (call $note (call $buffer (i32.const 4) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 4)))  ;; b
    (call $note (call $buffer_status (i32.const 0) (i32.const 0) (i32.const 4)))        ;; a
    (call $note (call $set_buffer (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 120) (i32.const 1))) ;; c
    (call $note (call $get (i32.const 6) (i32.const 120) (i32.const 1) (i32.const 0) (i32.const 4)))    ;; c
    (call $note (call $get (i32.const 2) (i32.const 120) (i32.const 1) (i32.const 0) (i32.const 4)))    ;; c
    (call $note (call $log (i32.const 9) (i32.const 120) (i32.const 1)))               ;; c
    (call $note (call $log (i32.const 2) (i32.const 65530) (i32.const 100)))           ;; g
    (call $note (call $get_shared (i32.const 120) (i32.const 1) (i32.const 0) (i32.const 4) (i32.const 8))) ;; b
    (call $note (call $dequeue (i32.const 77) (i32.const 0) (i32.const 4)))            ;; b
    (call $note (call $resolve (i32.const 0) (i32.const 0) (i32.const 120) (i32.const 1) (i32.const 8))) ;; b
    (call $note (call $register (i32.const 120) (i32.const 1) (i32.const 8)))          ;; a
    (call $note (call $dequeue (i32.load (i32.const 8)) (i32.const 0) (i32.const 4)))  ;; h
    (call $note (call $http_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 8)))        ;; m
    (drop (call $add (i32.const 0) (i32.const 100) (i32.const 10) (i32.const 200) (global.get $n)))
    (i32.const 0)))"""


def test_host_call_statuses_follow_envoy() -> None:
    result = run(inline(STATUS_WAT), HttpMessage(((":path", "/"),)), OK)
    assert result.error is None
    assert result.request.headers == ((":path", "/"), ("x-statuses", "bccmcbaccccgbbbahm"))
    assert result.unimplemented == ("proxy_http_call",)
