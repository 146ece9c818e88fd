"""What Envoy does with real proxy-wasm filters, asserted from outside: requests through a real Envoy.

Each test starts Envoy (renderer.envoy.process) with a small static bootstrap built as data below: one
listener on 127.0.0.1 port 0, an HTTP connection manager whose chain is the filter under test and the
router, and a cluster to an upstream on 127.0.0.1 that the test starts (a threaded http.server that
records what it receives). Requests go through http.client. The filters are built from source in this
repository (tests/filters/, tests/modules/, filters/example-filter/) by tests/wasm_sources.py:

- cpp_probe (C++, zig's clang++): body callbacks, a body rewrite, headers Envoy adds before and after
  the filters, proxy_http_call, a trap, a configuration it rejects;
- rust_probe (Rust, no crates): log levels and proxy_get_log_level, context ids, xds.* properties, a timer;
- the example filter, and WAT modules shaped like TinyGo and Go 1.24 SDK builds (exports, call order);
- three modules Envoy refuses to load, each with the reason Envoy gives.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from renderer.envoy import process
from renderer.envoy.binary import EnvoyBinary, EnvoyNotFound, find_envoy
from wasm_sources import MODULES, WasmBuilder

LISTENER = "probe"
UPSTREAM_CLUSTER = "upstream"
ROUTE = "to-upstream"
NODE_ID = "probe-node"

WASM_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"

# Bodies the upstream answers with: /chunks/N answers N chunks of CHUNK bytes, each written after a pause
# so that Envoy reads them separately; anything else answers FIXED_BODY with a content-length.
CHUNK = b"0123456789abcdef" * 64  # 1,024 bytes
CHUNK_PAUSE = 0.05
FIXED_BODY = b"hello from the upstream\n"
SIDE_CALL_BODY = b"side answer"


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def wasm_filter(module: Path, *, name: str, configuration: str = "", fail_open: bool = False,
                root_id: str = "", vm_id: str | None = None) -> dict[str, Any]:
    """envoy.filters.http.wasm loading `module` from a local file with V8, as Istio configures it."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": WASM_FILTER_TYPE,
            "config": {
                "name": name,
                "root_id": root_id,
                "vm_config": {"vm_id": vm_id if vm_id is not None else name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(module)}}},
                "configuration": {"@type": STRING_VALUE_TYPE, "value": configuration},
                "fail_open": fail_open,
            },
        },
    }


def cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}]},
    }


def bootstrap(http_filters: Sequence[dict[str, Any]], upstream_port: int,
              extra_clusters: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": LISTENER,
        "route_config": {
            "name": "probe_route",
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                               "routes": [{"name": ROUTE, "match": {"prefix": "/"},
                                           "route": {"cluster": UPSTREAM_CLUSTER, "timeout": "10s"}}]}],
        },
        "http_filters": [*http_filters, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "node": {"id": NODE_ID, "cluster": "probe-cluster"},
        "admin": {"address": _address(0)},
        "static_resources": {
            "listeners": [{
                "name": LISTENER,
                "address": _address(0),
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": [cluster(UPSTREAM_CLUSTER, upstream_port), *extra_clusters],
        },
    }


# ---------------------------------------------------------------------------------------------- upstream


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Upstream:
    """An HTTP/1.1 server on 127.0.0.1 recording what it receives; use as a context manager."""

    received: list[Received] = field(default_factory=list)
    port: int = 0

    def __enter__(self) -> Upstream:
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            # send_response_only, not send_response: the upstream sends no `server` and no `date`, so
            # whatever of them reaches the client was added by Envoy.
            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length", "0")))

            def _answer(self) -> None:
                body = self._body()
                upstream.received.append(Received(self.command, self.path,
                                                  {k.lower(): v for k, v in self.headers.items()}, body))
                if self.path.startswith("/chunks/"):
                    count = int(self.path.rsplit("/", 1)[1])
                    self.send_response_only(200)
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    for _ in range(count):
                        time.sleep(CHUNK_PAUSE)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                answer = SIDE_CALL_BODY if self.path == "/side-call" else FIXED_BODY
                self.send_response_only(200)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = _answer  # noqa: N815 - the names http.server dispatches to

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="upstream", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def paths(self) -> list[str]:
        return [r.path for r in self.received]


# ---------------------------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


def request(port: int, path: str = "/", *, method: str = "GET", body: bytes | Iterator[bytes] | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    """One request on a fresh connection; an iterator body is sent chunked, one chunk per item."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        merged: dict[str, str] = {}
        for k, v in resp.getheaders():
            merged[k.lower()] = f"{merged[k.lower()]}, {v}" if k.lower() in merged else v
        return Response(resp.status, merged, data)
    finally:
        conn.close()


def slow_chunks(chunks: Sequence[bytes], pause: float = CHUNK_PAUSE) -> Iterator[bytes]:
    """A request body written in separate pieces, with a pause before each, so Envoy reads them apart."""
    for chunk in chunks:
        time.sleep(pause)
        yield chunk


# ---------------------------------------------------------------------------------------------- fixtures


def envoy_children() -> list[int]:
    """Envoy processes this test process started that still exist (running or not yet reaped)."""
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        if ppid == me and comm == "envoy":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(autouse=True)
def no_envoy_survives() -> Iterator[None]:
    before = envoy_children()
    yield
    left = [pid for pid in envoy_children() if pid not in before]
    assert not left, f"Envoy processes outlived the test: {left}"


@pytest.fixture(scope="session")
def builder(tmp_path_factory: pytest.TempPathFactory) -> WasmBuilder:
    return WasmBuilder(tmp_path_factory.mktemp("wasm-modules"))


@pytest.fixture(scope="session")
def envoy() -> EnvoyBinary:
    try:
        found = find_envoy()
        assert found.version
    except EnvoyNotFound as e:
        pytest.fail(f"these tests run filters in a real Envoy: {e}", pytrace=False)
    return found


@dataclass
class Running:
    server: process.EnvoyServer
    port: int
    upstream: Upstream

    def get(self, path: str = "/fixed", **kwargs: Any) -> Response:
        return request(self.port, path, **kwargs)

    def wait_for_log(self, pattern: str, mark: int = 0, *, count: int = 1, timeout: float = 10.0) -> list[str]:
        """Lines logged after `mark` matching `pattern`, once there are `count` of them (Envoy flushes
        its log file on a timer, so a line can arrive a little after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [ln for ln in self.server.log_since(mark).splitlines() if re.search(pattern, ln)]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


StartEnvoy = Callable[..., Running]


@pytest.fixture
def start_envoy(envoy: EnvoyBinary, tmp_path: Path) -> Iterator[StartEnvoy]:
    """Starts an upstream and an Envoy in front of it; both are stopped when the test ends."""
    with contextlib.ExitStack() as stack:
        counter = iter(range(1000))

        def start(filters: Callable[[Upstream], Sequence[dict[str, Any]]] | Sequence[dict[str, Any]], *,
                  extra_clusters: Callable[[Upstream], Iterable[dict[str, Any]]] = lambda up: (),
                  wasm_log_level: str = "info") -> Running:
            upstream = stack.enter_context(Upstream())
            chain = filters(upstream) if callable(filters) else filters
            workdir = tmp_path / f"envoy-{next(counter)}"
            workdir.mkdir()
            config = bootstrap(chain, upstream.port, extra_clusters(upstream))
            server = stack.enter_context(process.serving(envoy, config, workdir,
                                                         component_log_level=[("wasm", wasm_log_level)]))
            return Running(server, server.listener_ports()[LISTENER], upstream)

        yield start


def validate(envoy: EnvoyBinary, tmp_path: Path, filters: Sequence[dict[str, Any]]) -> process.Validation:
    workdir = tmp_path / f"validate-{len(list(tmp_path.glob('validate-*')))}"
    workdir.mkdir()
    return process.validate(envoy, bootstrap(filters, 1), workdir)


def refused_to_start(envoy: EnvoyBinary, tmp_path: Path, filters: Sequence[dict[str, Any]]) -> str:
    """The log of an Envoy server that would not start with these filters (fails when it starts)."""
    workdir = tmp_path / "refused"
    workdir.mkdir(exist_ok=True)
    with pytest.raises(process.EnvoyFailed) as failed, process.serving(envoy, bootstrap(filters, 1), workdir):
        pass
    return failed.value.log


def calls(described: str) -> list[tuple[int, bool]]:
    """`1024,1024,0+eos` (as the C++ probe reports body callbacks) -> [(1024, False), ..., (0, True)]."""
    return [(int(c.removesuffix("+eos")), c.endswith("+eos")) for c in described.split(",")]


# ---------------------------------------------------------------------------------------------- the harness


def test_the_survivor_check_sees_a_running_envoy(envoy: EnvoyBinary, tmp_path: Path) -> None:
    server = process.EnvoyServer(envoy, bootstrap([], 1), tmp_path)
    with server:
        assert server.running
        assert len(envoy_children()) == 1
    assert envoy_children() == []


def test_nothing_built_lands_in_the_repository(builder: WasmBuilder) -> None:
    for name in ("cpp_probe", "rust_probe", "example_filter", "go124_wasip1_reactor"):
        built = builder.path(name)
        assert built.read_bytes()[:4] == b"\0asm"
        assert MODULES.parent not in built.parents
    assert sorted(p.name for p in (MODULES.parent / "filters").rglob("*.wasm")) == []


# ---------------------------------------------------------------------------------------------- refused modules

_REFUSED = [
    # module, Envoy's reason, the defect in the source, the same module without it
    ("refused_bad_signature",
     "Bad function signature for: proxy_on_request_headers, want: i32 i32 -> i32, "
     "but the module exports: i32 i32 i32 -> i32",
     '(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)',
     '(func (export "proxy_on_request_headers") (param i32 i32) (result i32)'),
    ("refused_missing_import",
     "Failed to load Wasm module due to a missing import: env.proxy_new_shiny_call",
     '(import "env" "proxy_new_shiny_call" (func $shiny (param i32 i32) (result i32)))',
     '(func $shiny (param i32 i32) (result i32) i32.const 0)'),
    ("refused_proc_exit",
     "Function: _start failed: Uncaught Error: restricted_callback",
     "(call $proc_exit (i32.const 0))",
     ""),
]


@pytest.mark.parametrize(("name", "reason", "defect", "repair"), _REFUSED, ids=[r[0] for r in _REFUSED])
def test_envoy_refuses_the_module_and_says_why(envoy: EnvoyBinary, builder: WasmBuilder, tmp_path: Path,
                                                name: str, reason: str, defect: str, repair: str) -> None:
    refused = validate(envoy, tmp_path, [wasm_filter(builder.path(name), name=name)])
    assert not refused.ok
    assert reason in refused.log
    assert f"Unable to create Wasm plugin {name}" in refused.log
    assert reason in refused_to_start(envoy, tmp_path, [wasm_filter(builder.path(name), name=name)])

    # The same module without that one defect loads: the defect is the reason, nothing else.
    source = (MODULES / f"{name}.wat").read_text(encoding="utf-8")
    assert source.count(defect) == 1
    repaired = tmp_path / f"{name}-repaired.wasm"
    repaired.write_bytes(bytes(wasmtime.wat2wasm(source.replace(defect, repair))))
    loaded = validate(envoy, tmp_path, [wasm_filter(repaired, name=name)])
    assert loaded.ok, loaded.log


# What Envoy 1.40 does with every WAT module of tests/modules: None loads, a string is the reason it refuses.
_WAT_VERDICTS: dict[str, str | None] = {
    "abi_010": None,
    "cpp_sdk_env": None,
    "cpp_sdk_wasi": "Function: _start failed: Uncaught Error: restricted_callback",
    "go124_wasip1_reactor": None,
    "legacy_no_marker": "Missing or unknown Proxy-Wasm ABI version",
    "property_probe": None,
    "refused_bad_signature": "Bad function signature for: proxy_on_request_headers",
    "refused_missing_import": "missing import: env.proxy_new_shiny_call",
    "refused_proc_exit": "Function: _start failed: Uncaught Error: restricted_callback",
    "rust_sdk": "missing import: env.proxy_new_shiny_call",
    "tinygo_sdk": None,
    "tinygo_wasi_command": None,
}


def test_every_wat_module_has_a_verdict() -> None:
    assert sorted(p.stem for p in MODULES.glob("*.wat")) == sorted(_WAT_VERDICTS)


@pytest.mark.parametrize("name", sorted(_WAT_VERDICTS))
def test_wat_module_in_envoy(envoy: EnvoyBinary, builder: WasmBuilder, tmp_path: Path, name: str) -> None:
    result = validate(envoy, tmp_path, [wasm_filter(builder.path(name), name=name, configuration="{}")])
    expected = _WAT_VERDICTS[name]
    if expected is None:
        assert result.ok, result.log
    else:
        assert not result.ok
        assert expected in result.log
