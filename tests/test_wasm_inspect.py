"""renderer.wasm against real modules assembled from WAT and validated by the real wasmtime."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import wasmtime
from wasm_sections import padded_to, uleb128

from renderer import reporters, wasm
from renderer.commands.inspect import exit_code
from renderer.wasm import (
    CLIENT_SIDE_APPLY_LIMIT,
    CONFIGMAP_LIMIT,
    WasmReport,
    inspect_wasm,
)


def module(body: str) -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {body})"))


CALLBACKS = """
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) i32.const 0)
"""


def abi_module(abi: str) -> bytes:
    return module(f'(import "env" "proxy_log" (func (param i32 i32 i32) (result i32))) {CALLBACKS}'
                  f'(func (export "proxy_abi_version_{abi}"))')


EXPECTED_CALLBACKS = ("proxy_on_context_create", "proxy_on_memory_allocate", "proxy_on_response_headers")


@pytest.mark.parametrize("abi", ["0.1.0", "0.2.0", "0.2.1"])
def test_abi_versions(abi: str) -> None:
    data = abi_module(abi.replace(".", "_"))
    report = inspect_wasm(data)
    assert report == WasmReport(
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        is_wasm=True,
        valid=True,
        error=None,
        abi_version=abi,
        callbacks=EXPECTED_CALLBACKS,
        import_modules=("env",),
        start=None,
        exported_functions=(f"proxy_abi_version_{abi.replace('.', '_')}", *EXPECTED_CALLBACKS),
        imports=("env.proxy_log",),
    )
    assert report.is_proxy_wasm and not report.legacy
    assert exit_code(report) == 0


def test_legacy_module_without_abi_marker_is_accepted() -> None:
    data = module(CALLBACKS)
    report = inspect_wasm(data)
    assert report.abi_version is None
    assert report.legacy is True
    assert report.is_proxy_wasm is True
    assert report.callbacks == EXPECTED_CALLBACKS
    assert report.import_modules == ()
    assert exit_code(report) == 0
    text = reporters.report("module", "text", report, "old.wasm")
    assert "verdict:            proxy-wasm module, ABI version unknown (legacy)\n" in text
    assert "abi version:        unknown (legacy)\n" in text


def test_newest_abi_marker_wins_and_only_function_exports_count() -> None:
    both = module('(func (export "proxy_abi_version_0_1_0")) (func (export "proxy_abi_version_0_2_1"))')
    assert inspect_wasm(both).abi_version == "0.2.1"
    # A global with the marker's name is not the marker: the ABI defines a function.
    global_marker = module('(global (export "proxy_abi_version_0_2_1") i32 (i32.const 0))')
    report = inspect_wasm(global_marker)
    assert report.abi_version is None
    assert report.exported_functions == ()
    assert exit_code(report) == 1


def test_wasi_imports_and_every_import_kind() -> None:
    data = module("""
      (type $t (func))
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (import "wasi_unstable" "proc_exit" (func (param i32)))
      (import "env" "memory" (memory 1 2))
      (import "env" "table" (table 1 funcref))
      (import "env" "typed" (table 1 5 (ref null $t)))
      (import "env" "g" (global (mut i32)))
      (import "env" "gref" (global (ref null $t)))
      (import "host" "shared" (memory 1 1 shared))
      (import "host64" "mem64" (memory i64 1))
      (func (export "proxy_abi_version_0_2_0"))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
    """)
    report = inspect_wasm(data)
    assert report.valid, report.error
    assert report.import_modules == ("env", "host", "host64", "wasi_snapshot_preview1", "wasi_unstable")
    assert report.abi_version == "0.2.0"
    assert report.callbacks == ("proxy_on_vm_start",)
    assert report == inspect_wasm(data, compile=True)


@pytest.mark.parametrize(
    ("exports", "start"),
    [
        ('(func (export "_start"))', "_start"),
        ('(func (export "_initialize"))', "_initialize"),
        # The ABI: a host calls _initialize when exported, and _start only otherwise.
        ('(func (export "_start")) (func (export "_initialize"))', "_initialize"),
        ("", None),
    ],
)
def test_start_functions(exports: str, start: str | None) -> None:
    report = inspect_wasm(module(f'(func (export "proxy_abi_version_0_2_1")) {exports}'))
    assert report.start == start


def test_valid_webassembly_that_is_not_proxy_wasm() -> None:
    data = module('(func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)')
    report = inspect_wasm(data)
    assert report.valid and report.is_wasm
    assert not report.is_proxy_wasm and not report.legacy
    assert report.exported_functions == ("add",)
    assert exit_code(report) == 1
    assert reporters.report("module", "text", report, "add.wasm").splitlines()[1] == (
        "verdict:            valid WebAssembly, but not a proxy-wasm module "
        "(no proxy_abi_version_* export, no proxy_on_* callback)"
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"(module)", "not a WebAssembly binary: this is WebAssembly text (WAT); compile it with wat2wasm first"),
        (
            b';; a filter\n(; block ;)\n  (module (func (export "proxy_on_log") (param i32)))',
            "not a WebAssembly binary: this is WebAssembly text (WAT); compile it with wat2wasm first",
        ),
        (b"apiVersion: v1\nkind: ConfigMap\n", "not a WebAssembly binary: missing the \\0asm magic number"),
        (b"", "not a WebAssembly binary: the file is empty"),
        (b"\0as", "not a WebAssembly binary: missing the \\0asm magic number"),
    ],
)
def test_not_webassembly(data: bytes, error: str) -> None:
    # wasmtime.Module would compile the WAT ones; the magic check must come first.
    report = inspect_wasm(data)
    assert (report.is_wasm, report.valid, report.error) == (False, False, error)
    assert report.callbacks == () and report.abi_version is None
    assert exit_code(report) == 2
    assert inspect_wasm(data, compile=True) == report


def test_truncated_and_corrupt_binaries() -> None:
    good = abi_module("0_2_1")
    truncated = inspect_wasm(good[:-7])
    assert truncated.is_wasm and not truncated.valid
    assert truncated.error is not None and "unexpected end-of-file" in truncated.error
    assert "\n" not in truncated.error
    assert exit_code(truncated) == 2

    wrong_version = inspect_wasm(good[:4] + b"\x02\x00\x00\x00" + good[8:])
    assert wrong_version.error is not None and "unknown binary version" in wrong_version.error
    assert exit_code(wrong_version) == 2

    # Well-formed but ill-typed: a function that promises an i32 and returns nothing.
    ill_typed = inspect_wasm(module('(func (export "proxy_on_done") (param i32) (result i32))'))
    assert ill_typed.is_wasm and not ill_typed.valid and not ill_typed.is_proxy_wasm
    assert ill_typed.error is not None and "type mismatch" in ill_typed.error
    assert exit_code(ill_typed) == 2
    assert inspect_wasm(module('(func (export "proxy_on_done") (param i32) (result i32))'), compile=True).valid is False


@pytest.mark.parametrize(
    ("total", "configmap", "client_side_apply"),
    [
        (CLIENT_SIDE_APPLY_LIMIT, True, True),
        (CLIENT_SIDE_APPLY_LIMIT + 1, True, False),
        (CONFIGMAP_LIMIT, True, False),
        (CONFIGMAP_LIMIT + 1, False, False),
    ],
)
def test_size_limits(total: int, configmap: bool, client_side_apply: bool) -> None:
    data = padded_to(abi_module("0_2_1"), total)
    report = inspect_wasm(data)
    assert report.size == total
    assert report.valid and report.abi_version == "0.2.1"
    assert (report.fits_configmap, report.fits_client_side_apply) == (configmap, client_side_apply)
    # Size is a deployment question, not a loadability one.
    assert exit_code(report) == 0


def test_limits_are_the_kubernetes_numbers() -> None:
    assert CONFIGMAP_LIMIT == 1_048_576
    # 196,608 bytes are exactly 262,144 base64 characters: the annotation budget.
    assert CLIENT_SIDE_APPLY_LIMIT * 4 // 3 == 262_144


def test_text_report_exact() -> None:
    data = abi_module("0_2_1")
    digest = hashlib.sha256(data).hexdigest()
    assert reporters.report("module", "text", inspect_wasm(data), "filters/a.wasm") == (
        "file:               filters/a.wasm\n"
        "verdict:            proxy-wasm module, ABI 0.2.1\n"
        f"size:               {len(data)} bytes\n"
        f"sha256:             {digest}\n"
        "abi version:        0.2.1\n"
        "callbacks:          proxy_on_context_create, proxy_on_memory_allocate, proxy_on_response_headers\n"
        "import modules:     env\n"
        "start:              none\n"
        "exported functions: proxy_abi_version_0_2_1, proxy_on_context_create, proxy_on_memory_allocate, "
        "proxy_on_response_headers\n"
        "configmap:          fits\n"
        "client-side apply:  fits\n"
    )


def test_text_report_oversize_and_invalid() -> None:
    big = reporters.report("module", "text", inspect_wasm(padded_to(abi_module("0_2_1"), CONFIGMAP_LIMIT + 1)), "big.wasm")
    assert "size:               1048577 bytes (1.00 MiB)\n" in big
    assert "configmap:          too large (limit 1048576 bytes); serve it over HTTP(S) or OCI instead\n" in big
    assert "client-side apply:  too large (limit 196608 bytes); use kubectl apply --server-side\n" in big

    text = reporters.report("module", "text", inspect_wasm(b"(module)"), "a.wat")
    assert text == (
        "file:    a.wat\n"
        "verdict: not WebAssembly\n"
        "size:    8 bytes\n"
        f"sha256:  {hashlib.sha256(b'(module)').hexdigest()}\n"
        "error:   not a WebAssembly binary: this is WebAssembly text (WAT); compile it with wat2wasm first\n"
    )


def test_json_report_exact() -> None:
    data = module(
        '(import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
        + CALLBACKS
        + '(func (export "_start"))'
    )
    text = reporters.report("module", "json", inspect_wasm(data), "legacy.wasm")
    assert text.endswith("}\n")
    document = json.loads(text)
    assert document == {
        "abi_version": None,
        "callbacks": list(EXPECTED_CALLBACKS),
        "error": None,
        "exit_code": 0,
        "exported_functions": ["_start", *EXPECTED_CALLBACKS],
        "fits_client_side_apply": True,
        "fits_configmap": True,
        "import_modules": ["wasi_unstable"],
        "imports": ["wasi_unstable.fd_write"],
        "code_sha256": None,
        "client_side_apply": None,
        "schemaVersion": 1,
        "is_proxy_wasm": True,
        "is_wasm": True,
        "legacy": True,
        "path": "legacy.wasm",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "start": "_start",
        "valid": True,
        "verdict": "proxy-wasm module, ABI version unknown (legacy)",
    }
    # Stable output: keys sorted, so two runs diff cleanly.
    assert list(document) == sorted(document)
    assert text == json.dumps(document, sort_keys=True, indent=2) + "\n"


def test_json_report_for_garbage() -> None:
    document = json.loads(reporters.report("module", "json", inspect_wasm(b"hello"), "x"))
    assert document["exit_code"] == 2
    assert document["is_wasm"] is False and document["valid"] is False
    assert document["error"] == "not a WebAssembly binary: missing the \\0asm magic number"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown report format 'yaml'"):
        reporters.report("module", "yaml", inspect_wasm(b""), "x")


def test_engine_is_created_once() -> None:
    assert wasm._engine() is wasm._engine()


def test_section_reader_falls_back_to_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    data = abi_module("0_2_1")
    expected = inspect_wasm(data)

    def unknown(_data: bytes) -> None:
        raise wasm._UnknownEncoding("a future import kind")

    monkeypatch.setattr(wasm, "_read_sections", unknown)
    assert inspect_wasm(data) == expected


def big_module(min_size: int) -> bytes:
    """Real code, not padding: about 600 bytes of instructions per function."""
    body = " ".join(
        f"(local.set $x (i32.add (i32.mul (local.get $x) (i32.const {k})) (i32.load offset={k * 4} (local.get $p))))"
        for k in range(40)
    )
    func = '(func (export "proxy_on_f{n}") (param $p i32) (result i32) (local $x i32) {body} (local.get $x))'
    count = 1
    while True:
        functions = " ".join(func.format(n=n, body=body) for n in range(count))
        data = module(f'(import "env" "proxy_log" (func (param i32 i32 i32) (result i32))) (memory 1) {functions}')
        if len(data) >= min_size:
            return data
        count = count * min_size // len(data) + 1


def test_one_megabyte_module_inspects_fast() -> None:
    data = big_module(CONFIGMAP_LIMIT)
    inspect_wasm(abi_module("0_2_1"))  # engine creation is a one-off, not per module
    start = time.perf_counter()
    report = inspect_wasm(data)
    elapsed = time.perf_counter() - start
    assert report.valid and report.legacy and len(report.callbacks) > 1000
    assert report.import_modules == ("env",)
    # Measured at about 0.01 s on 2 cores (Cranelift compilation takes about 0.8 s).
    assert elapsed < 0.25, f"inspecting {len(data)} bytes took {elapsed:.3f} s"


@pytest.mark.parametrize("extra", [1, 127, 128, 129, 16_383, 16_384, 16_390, 2_100_000])
def test_padding_gives_exactly_the_size_asked_and_a_valid_module(extra: int) -> None:
    # Sizes around the points where the section's LEB128 length prefix grows a byte.
    base = abi_module("0_2_1")
    total = len(base) + extra + 6
    padded = padded_to(base, total)
    assert len(padded) == total
    report = inspect_wasm(padded)
    assert report.valid and report.abi_version == "0.2.1"


def test_uleb128_round_numbers() -> None:
    assert [uleb128(n) for n in (0, 127, 128, 624485)] == [b"\x00", b"\x7f", b"\x80\x01", b"\xe5\x8e\x26"]
