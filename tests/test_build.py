"""renderer.build with a recording fake docker, a real zig build, and the built filter run in wasmtime."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wasmtime

from renderer.build import (
    BuildFailed,
    docker_command,
    local_build_command,
    local_compiler,
    run_docker_builds,
    run_local_builds,
)
from renderer.errors import UsageError
from renderer.model import DEFAULTS, BuildTarget
from renderer.wasm import inspect_wasm

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "filters" / "example-filter"
COMMITTED_WASM = EXAMPLE / "example-filter.wasm"
NO_DOCKER = "wasm-gitops: docker not found; build locally instead with 'make wasm-local'\n"


def target(context: Path, image: str | None = None, name: str = "demo") -> BuildTarget:
    return BuildTarget(name=name, context=context, image=image, wasm=context / f"{name}.wasm")


# ---- docker ---------------------------------------------------------------------------------


def test_docker_command_uses_the_default_image() -> None:
    assert docker_command(target(Path("/src/demo")), None) == [
        "docker", "run", "--rm", "-v", "/src/demo:/work", "-w", "/work",
        "registry.cn-hangzhou.aliyuncs.com/acs/wasmsdk:v0.1", "/build_wasm.sh",
    ]  # fmt: skip
    assert DEFAULTS.build_image == "registry.cn-hangzhou.aliyuncs.com/acs/wasmsdk:v0.1"


def test_environment_image_replaces_the_default() -> None:
    assert docker_command(target(Path("/src/demo")), "mirror.local/wasmsdk:v2")[7] == "mirror.local/wasmsdk:v2"


def test_filter_image_beats_the_environment() -> None:
    command = docker_command(target(Path("/src/rs"), image="rust-sdk:1"), "mirror.local/wasmsdk:v2")
    assert command == ["docker", "run", "--rm", "-v", "/src/rs:/work", "-w", "/work", "rust-sdk:1", "/build_wasm.sh"]


def fake_docker(bin_dir: Path, exit_status: int = 0, produce: bool = True) -> Path:
    """A `docker` that appends its arguments (one a line, then `--`) to $RECORD."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "docker"
    # Arguments: run --rm -v CONTEXT:/work -w /work IMAGE /build_wasm.sh, so $4 is the mount.
    make_output = 'ctx="${4%:/work}"; : > "$ctx/$(basename "$ctx").wasm"\n' if produce else ""
    script.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do printf "%s\\n" "$arg" >> "$RECORD"; done\n'
        'echo -- >> "$RECORD"\n' + make_output + f"exit {exit_status}\n"
    )
    script.chmod(0o755)
    return script


def test_run_docker_builds_runs_each_target_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_docker(tmp_path / "bin")
    record = tmp_path / "argv.txt"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "RECORD": str(record), "WASM_SDK_IMAGE": "mirror/sdk:2"}

    said: list[str] = []
    run_docker_builds([target(one, name="one"), target(two, image="own/sdk:3", name="two")], env, said.append)

    assert record.read_text().splitlines() == [
        "run", "--rm", "-v", f"{one}:/work", "-w", "/work", "mirror/sdk:2", "/build_wasm.sh", "--",
        "run", "--rm", "-v", f"{two}:/work", "-w", "/work", "own/sdk:3", "/build_wasm.sh", "--",
    ]  # fmt: skip
    assert said == ["building one in mirror/sdk:2", "building two in own/sdk:3"]
    assert capsys.readouterr() == ("", ""), "the builder reports through its caller, never by printing"


def test_run_docker_builds_without_docker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for env in ({"PATH": str(empty)}, {}):
        with pytest.raises(UsageError) as raised:
            run_docker_builds([target(tmp_path)], env)
        assert f"wasm-gitops: {raised.value}\n" == NO_DOCKER
        assert raised.value.exit_code == 2
    assert capsys.readouterr() == ("", "")


def test_run_docker_builds_stops_at_the_first_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 125 is what the real client returns when there is no Docker engine, as on this machine.
    fake_docker(tmp_path / "bin", exit_status=125, produce=False)
    record = tmp_path / "argv.txt"
    env = {"PATH": str(tmp_path / "bin"), "RECORD": str(record)}
    with pytest.raises(BuildFailed) as raised:
        run_docker_builds([target(tmp_path, name="a"), target(tmp_path, name="b")], env)
    assert record.read_text().count("--\n") == 1
    assert (raised.value.exit_code, str(raised.value)) == (
        1, "a: docker exited with status 125; without a Docker engine, build locally with 'make wasm-local'")


def test_run_docker_builds_notices_a_missing_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_docker(tmp_path / "bin", produce=False)
    env = {"PATH": str(tmp_path / "bin"), "RECORD": str(tmp_path / "argv.txt")}
    with pytest.raises(BuildFailed, match=f"^demo: the build succeeded but did not produce {tmp_path / 'demo.wasm'}$"):
        run_docker_builds([target(tmp_path)], env)


# ---- local build ----------------------------------------------------------------------------


def test_local_build_command() -> None:
    assert local_compiler() == [sys.executable, "-m", "ziglang", "cc"]
    assert local_build_command(target(Path("/src/demo")), ["/v/bin/python", "-m", "ziglang", "cc"]) == [
        "make", "-C", "/src/demo", "WASM_CC=/v/bin/python -m ziglang cc",
    ]  # fmt: skip
    # A compiler path with a space stays one word for the recipe's shell.
    assert local_build_command(target(Path("/src/demo")), ["/my venv/python", "-m", "ziglang", "cc"])[3] == (
        "WASM_CC='/my venv/python' -m ziglang cc"
    )


def test_local_build_is_reproducible_and_matches_the_committed_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two checkouts at different absolute paths, one with a space in it: no path may leak in.
    # Every build gets an empty zig cache, so a cache hit cannot pass for reproducibility.
    builds = []
    for place in ("first", "second place/deeper"):
        context = tmp_path / place / "example-filter"
        shutil.copytree(EXAMPLE, context)
        (context / "example-filter.wasm").unlink()
        build = BuildTarget(name="example-filter", context=context, image=None, wasm=context / "example-filter.wasm")
        monkeypatch.setenv("ZIG_GLOBAL_CACHE_DIR", str(tmp_path / "cache" / place / "1"))
        run_local_builds([build], local_compiler())
        first = build.wasm.read_bytes()
        monkeypatch.setenv("ZIG_GLOBAL_CACHE_DIR", str(tmp_path / "cache" / place / "2"))
        run_local_builds([build], local_compiler())
        assert build.wasm.read_bytes() == first, "two builds in one place differ"
        assert str(tmp_path).encode() not in first
        builds.append(first)

    assert builds[0] == builds[1], "builds at two paths differ"
    assert builds[0] == COMMITTED_WASM.read_bytes(), "the committed example-filter.wasm is stale: rebuild it"
    assert b"example-filter.c" not in builds[0]

    report = inspect_wasm(builds[0])
    assert report.abi_version == "0.2.1"
    assert report.callbacks == (
        "proxy_on_configure",
        "proxy_on_context_create",
        "proxy_on_delete",
        "proxy_on_done",
        "proxy_on_log",
        "proxy_on_memory_allocate",
        "proxy_on_request_headers",
        "proxy_on_response_headers",
        "proxy_on_vm_start",
    )
    assert report.import_modules == ("env",)
    assert report.start is None
    assert report == inspect_wasm(builds[0], compile=True)


def test_local_build_failure_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = tmp_path / "example-filter"
    shutil.copytree(EXAMPLE, context)
    (context / "example-filter.c").write_text("this is not C\n")
    build = BuildTarget(name="broken", context=context, image=None, wasm=context / "example-filter.wasm")
    with pytest.raises(BuildFailed, match="^broken: make exited with status 2$"):
        run_local_builds([build], local_compiler())


# ---- the filter itself, in a hand-written proxy-wasm host -----------------------------------

LOG_WARN = 3


@dataclass
class Host:
    """Just enough of an Envoy to drive example-filter.wasm through wasmtime."""

    config: bytes = b""
    buffer_status: int = 0
    logs: list[tuple[int, str]] = field(default_factory=list)
    headers: list[tuple[int, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        engine = wasmtime.Engine()
        self.store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        i32 = wasmtime.ValType.i32()

        def define(name: str, params: int, fn: Callable[..., int]) -> None:
            kind = wasmtime.FuncType([i32] * params, [i32])
            linker.define_func("env", name, kind, fn, access_caller=True)

        define("proxy_log", 3, self._log)
        define("proxy_get_buffer_bytes", 5, self._get_buffer_bytes)
        define("proxy_add_header_map_value", 5, self._add_header)
        module = wasmtime.Module(engine, COMMITTED_WASM.read_bytes())
        self.instance = linker.instantiate(self.store, module)
        memory = self.instance.exports(self.store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory

    @staticmethod
    def _read(caller: wasmtime.Caller, ptr: int, size: int) -> bytes:
        memory = caller.get("memory")
        assert isinstance(memory, wasmtime.Memory)
        return bytes(memory.read(caller, ptr, ptr + size))

    def _log(self, caller: wasmtime.Caller, level: int, ptr: int, size: int) -> int:
        self.logs.append((level, self._read(caller, ptr, size).decode()))
        return 0

    def _get_buffer_bytes(self, caller: wasmtime.Caller, buffer: int, start: int, max_size: int, out_ptr: int,
                          out_size: int) -> int:  # fmt: skip
        assert buffer == 7, "only the plugin configuration is asked for"
        if self.buffer_status:
            return self.buffer_status
        data = self.config[start : start + max_size]
        allocate = caller.get("proxy_on_memory_allocate")
        memory = caller.get("memory")
        assert isinstance(allocate, wasmtime.Func) and isinstance(memory, wasmtime.Memory)
        ptr = allocate(caller, len(data))
        assert ptr, "proxy_on_memory_allocate failed"
        memory.write(caller, data, ptr)
        memory.write(caller, struct.pack("<I", ptr), out_ptr)
        memory.write(caller, struct.pack("<I", len(data)), out_size)
        return 0

    def _add_header(self, caller: wasmtime.Caller, map_type: int, key: int, key_size: int, value: int,
                    value_size: int) -> int:  # fmt: skip
        name = self._read(caller, key, key_size).decode()
        self.headers.append((map_type, name, self._read(caller, value, value_size).decode()))
        return 0

    def call(self, name: str, *args: int) -> int:
        fn = self.instance.exports(self.store)[name]
        assert isinstance(fn, wasmtime.Func)
        result = fn(self.store, *args)
        return 0 if result is None else int(result)

    def start_plugin(self, root: int = 1, config: bytes | None = None) -> int:
        self.call("proxy_on_context_create", root, 0)
        assert self.call("proxy_on_vm_start", root, 0) == 1
        return self.configure(root, config)

    def configure(self, root: int, config: bytes | None) -> int:
        self.config = config or b""
        return self.call("proxy_on_configure", root, len(self.config))

    def response(self, stream: int, root: int = 1) -> list[tuple[int, str, str]]:
        """One request/response on a new stream; the headers the filter added to it."""
        self.headers.clear()
        self.call("proxy_on_context_create", stream, root)
        assert self.call("proxy_on_request_headers", stream, 3, 0) == 0
        assert self.call("proxy_on_response_headers", stream, 2, 0) == 0
        assert self.call("proxy_on_done", stream) == 1
        self.call("proxy_on_log", stream)
        self.call("proxy_on_delete", stream)
        return list(self.headers)

    def warnings(self) -> list[str]:
        return [text for level, text in self.logs if level == LOG_WARN]


def test_filter_adds_the_default_header() -> None:
    host = Host()
    assert host.start_plugin() == 1
    assert host.response(2) == [(2, "resp-header-demo", "added by our filter")]
    assert host.logs == []


def test_filter_uses_the_configured_header() -> None:
    host = Host()
    assert host.start_plugin(config=b'{"header": "X-Name", "value": "v"}') == 1
    # Lowercased, as Envoy stores header names.
    assert host.response(2) == [(2, "x-name", "v")]
    assert host.logs == []


def test_filter_config_fields_are_optional_and_json_escapes_decode() -> None:
    host = Host()
    assert host.start_plugin(config=b'{"value": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/"}') == 1
    assert host.response(2) == [(2, "resp-header-demo", 'café 😀 "q" \\ /')]
    assert host.configure(1, b' {"header" : "x-only"} \n') == 1
    assert host.response(3) == [(2, "x-only", "added by our filter")]
    assert host.configure(1, b"{}") == 1
    assert host.response(4) == [(2, "resp-header-demo", "added by our filter")]


def test_unknown_keys_are_accepted_with_a_warning() -> None:
    host = Host()
    config = {"header": "x-a", "extra": [1, -2.5e3, {"b": None, "c": [True, False]}], "value": "v", "x": "y"}
    assert host.start_plugin(config=json.dumps(config).encode()) == 1
    assert host.response(2) == [(2, "x-a", "v")]
    assert host.warnings() == [
        'example-filter: ignoring 2 unknown key(s) in the plugin configuration; known: "header", "value"'
    ]


SUFFIX = '; expected {"header": "x-name", "value": "v"}'


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (b"not json", "expected a JSON object at byte 0"),
        (b'["header"]', "expected a JSON object at byte 0"),
        (b'{"header": 1}', '"header" and "value" must be strings at byte 11'),
        (b'{"value": null}', '"header" and "value" must be strings at byte 10'),
        (b'{"header": "x-a"', "expected ',' or '}' at byte 16"),
        (b'{"header": "x-a"} trailing', "trailing data after the object at byte 18"),
        (b'{"header": "bad name"}', '"header" is not a valid header name at byte 22'),
        (b'{"header": ":status"}', '"header" is not a valid header name at byte 21'),
        (b'{"header": ""}', '"header" is empty at byte 14'),
        (b'{"value": "a\\r\\nset-cookie: x"}', '"value" holds a control character at byte 31'),
        (b'{"value": "a\nb"}', "control character in string at byte 13"),
        (b'{"value": "\\x"}', "bad escape in string at byte 13"),
        (b'{"value": "\\ud83d"}', "lone high surrogate at byte 17"),
        (b'{"value": "\\u12"}', "bad \\u escape at byte 16"),
        (b'{"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}', "nested too deeply at byte 38"),
        (b'{"a": 01}', "expected ',' or '}' at byte 7"),
        (b'{"a": tru}', "unexpected token at byte 6"),
    ],
)
def test_malformed_config_is_rejected_and_the_previous_one_kept(config: bytes, reason: str) -> None:
    host = Host()
    assert host.start_plugin(config=b'{"header": "x-good", "value": "ok"}') == 1
    assert host.configure(1, config) == 0
    assert host.warnings() == [f"example-filter: rejecting plugin configuration: {reason}{SUFFIX}"]
    assert host.response(2) == [(2, "x-good", "ok")]


def test_oversized_or_unavailable_config_is_rejected() -> None:
    host = Host()
    assert host.start_plugin(config=b'{"value": "' + b"a" * 70_000 + b'"}') == 0
    assert host.warnings() == ["example-filter: rejecting plugin configuration: larger than 65536 bytes"]
    host = Host(buffer_status=1)  # NOT_FOUND
    assert host.start_plugin(config=b"{}") == 0
    assert host.warnings() == ["example-filter: rejecting plugin configuration: the host did not hand it over"]


def test_each_plugin_keeps_its_own_configuration() -> None:
    host = Host()
    assert host.start_plugin(1, b'{"header": "x-one", "value": "1"}') == 1
    assert host.start_plugin(3, b'{"header": "x-three", "value": "3"}') == 1
    assert host.response(10, root=1) == [(2, "x-one", "1")]
    assert host.response(11, root=3) == [(2, "x-three", "3")]
    # An empty configuration means the defaults again.
    assert host.configure(3, b"") == 1
    assert host.response(12, root=3) == [(2, "resp-header-demo", "added by our filter")]
    assert host.response(13, root=1) == [(2, "x-one", "1")]
    # A stream whose plugin the host never created still gets the default header.
    assert host.response(14, root=99) == [(2, "resp-header-demo", "added by our filter")]


def test_memory_is_reused_across_streams_and_reconfigurations() -> None:
    host = Host()
    assert host.start_plugin(config=b'{"header": "x-a", "value": "v"}') == 1
    pages = host.memory.size(host.store)
    for stream in range(2, 3002):
        host.call("proxy_on_context_create", stream, 1)
        assert host.call("proxy_on_response_headers", stream, 0, 0) == 0
        host.call("proxy_on_delete", stream)
        if stream % 100 == 0:
            assert host.configure(1, b'{"header": "x-b", "value": "' + b"w" * 3000 + b'"}') == 1
    assert host.memory.size(host.store) == pages, "the allocator does not reuse freed blocks"
    assert host.headers[-1] == (2, "x-b", "w" * 3000)


def test_allocator_grows_memory_and_returns_aligned_blocks() -> None:
    host = Host()
    pages = host.memory.size(host.store)
    first = host.call("proxy_on_memory_allocate", 200_000)
    second = host.call("proxy_on_memory_allocate", 3)
    assert first % 8 == 0 and second % 8 == 0
    assert second >= first + 200_000
    assert host.memory.size(host.store) > pages
    assert host.call("proxy_on_memory_allocate", 0x7FFF_FFFF) == 0  # refused, not a trap

