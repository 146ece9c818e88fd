"""An embedded proxy-wasm host on wasmtime: runs one filter against one HTTP exchange, offline.

It implements the host side of ABI 0.1.0, 0.2.0 and 0.2.1 the way Envoy (through
proxy-wasm-cpp-host) does, so a filter sees the same call order, statuses and map availability as in
an Istio sidecar. Where Envoy's behaviour is surprising it is kept and the comment says so, because
the point of running filters here is to find what would go wrong in the sidecar before merge.

One Engine per process (compiling is the expensive part), one Store per run: a trap or a runaway
loop in one test case cannot leak state into the next one.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import wasmtime

from .abi import (
    U32,
    WASI_EBADF,
    WASI_EFAULT,
    WASI_ENOSYS,
    WASI_ESUCCESS,
    AbiVersion,
    BufferType,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    LogLevel,
    MapType,
    StreamType,
    WasmResult,
    detect_abi,
    parse_pairs,
    serialize_pairs,
)
from .properties import (
    HeaderMapValue,
    Int64,
    ObjectValue,
    PropertyTree,
    PropertyValue,
    UInt64,
    parse_override_path,
)

Pairs = list[tuple[bytes, bytes]]
Phase = Literal["request", "response", "none"]

# About 0.75 s of a tight wasm loop on a CI core; real filters use a few million units a request.
DEFAULT_FUEL = 500_000_000
# Fuel does not see time spent inside host calls, so a loop of host calls is bounded by the clock.
DEFAULT_DEADLINE_SECONDS = 30.0


# --------------------------------------------------------------------------------------------
# Data the host takes and gives back.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpMessage:
    """One direction of an exchange: headers (pseudo-headers included), optional body, trailers."""

    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    trailers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PluginSpec:
    """What Envoy's PluginBase carries: names (for properties and logs) and the two config blobs."""

    name: str
    root_id: str = ""
    vm_id: str = ""
    plugin_config: bytes = b""
    vm_config: bytes = b""


@dataclass(frozen=True)
class HostOptions:
    """Knobs of the simulated sidecar; the defaults describe an inbound HTTP/1.1 request."""

    fuel: int = DEFAULT_FUEL
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    max_memory_bytes: int = 512 * 1024 * 1024
    # The level proxy_get_log_level reports and below which proxy_log lines are dropped. Trace by
    # default so tests can assert on debug output, unlike Envoy's default of info.
    log_level: LogLevel = LogLevel.TRACE
    # Timer ticks delivered while a stream is paused, so a filter that resumes from proxy_on_tick
    # can be tested; each tick advances the host clock by the tick period.
    max_ticks: int = 10
    clock_ns: Callable[[], int] | None = None
    source_address: str = "10.0.0.1:51000"
    destination_address: str = "10.0.0.2:8080"
    protocol: str = "HTTP/1.1"
    listener_direction: int = 1  # envoy.config.core.v3.TrafficDirection INBOUND
    cluster_name: str = "inbound|8080||"
    route_name: str = "default"
    node_id: str = "sidecar~10.0.0.2~verify.default~default.svc.cluster.local"
    node_cluster: str = "verify.default"
    connection_id: int = 1
    # Extra or overriding properties by dotted path, e.g. ("node.metadata.NAME", b"reviews").
    properties: tuple[tuple[str, bytes], ...] = ()
    # Envoy's allow_on_headers_stop_iteration: off by default, so a pause from on_*_headers stops
    # body and trailer callbacks too (cpp-host turns StopIteration into StopAllIterationAndWatermark).
    allow_on_headers_stop_iteration: bool = False


@dataclass(frozen=True)
class LocalReply:
    """A response the filter generated with proxy_send_local_response."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]  # the additional headers the filter asked for
    details: str
    grpc_status: int | None
    phase: Phase  # the direction whose callback sent it


@dataclass(frozen=True)
class ExchangeResult:
    """What one run observed. `error` is set when the guest trapped or the host gave up on it."""

    request: HttpMessage  # the request as the filter left it (what upstream would receive)
    response: HttpMessage | None  # what the client would see; None if no response reached the filter
    local_reply: LocalReply | None
    paused: Phase
    reset: bool
    logs: tuple[str, ...]
    unimplemented: tuple[str, ...]
    warnings: tuple[str, ...]
    error: str | None
    abi_version: str
    tick_period_ms: int
    metrics: tuple[tuple[str, int], ...]


class ProxyWasmError(Exception):
    """A module or run the host cannot complete; the message is meant for the user."""


class ModuleLoadError(ProxyWasmError):
    """The bytes are not a module Envoy would load (invalid wasm, not proxy-wasm, link failure)."""


class GuestFailure(ProxyWasmError):
    """The guest trapped, ran out of fuel or time, exited, or refused to start or configure."""


# --------------------------------------------------------------------------------------------
# Engine and compiled modules.
# --------------------------------------------------------------------------------------------

_ENGINE: wasmtime.Engine | None = None
_ENGINE_LOCK = threading.Lock()
_MODULE_CACHE: dict[str, CompiledModule] = {}
_MODULE_CACHE_SIZE = 32


def get_engine() -> wasmtime.Engine:
    """The process-wide engine; fuel metering is compiled into every module it builds."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            _ENGINE = wasmtime.Engine(config)
        return _ENGINE


@dataclass(frozen=True)
class ImportSpec:
    module: str
    name: str
    kind: Literal["func", "memory", "table", "global"]
    params: tuple[str, ...] = ()
    results: tuple[str, ...] = ()


class CompiledModule:
    """A compiled filter plus what the host needs to know about its imports and exports."""

    def __init__(self, module: wasmtime.Module, sha256: str) -> None:
        self.module = module
        self.sha256 = sha256
        self.func_exports: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        export_names: list[str] = []
        for export in module.exports:
            export_names.append(export.name)
            ty = export.type
            if isinstance(ty, wasmtime.FuncType):
                self.func_exports[export.name] = (_valtypes(ty.params), _valtypes(ty.results))
        self.export_names = frozenset(export_names)
        self.imports: tuple[ImportSpec, ...] = tuple(_import_spec(imp) for imp in module.imports)
        abi = detect_abi(export_names)
        if abi is None:
            raise ModuleLoadError(
                "not a proxy-wasm module: it exports no proxy_abi_version_* marker and no proxy_on_* callbacks"
            )
        self.abi: AbiVersion = abi


def _valtypes(types: Sequence[wasmtime.ValType]) -> tuple[str, ...]:
    return tuple(str(t) for t in types)


def _import_spec(imp: wasmtime.ImportType) -> ImportSpec:
    ty = imp.type
    name = imp.name or ""
    if isinstance(ty, wasmtime.FuncType):
        return ImportSpec(imp.module, name, "func", _valtypes(ty.params), _valtypes(ty.results))
    if isinstance(ty, wasmtime.MemoryType):
        return ImportSpec(imp.module, name, "memory")
    if isinstance(ty, wasmtime.TableType):
        return ImportSpec(imp.module, name, "table")
    return ImportSpec(imp.module, name, "global")


def compile_module(wasm: bytes) -> CompiledModule:
    """Compile (or fetch from the per-process cache) a filter; raises ModuleLoadError."""
    if not bytes(wasm[:4]) == b"\x00asm":
        # wasmtime would also compile WAT text; Envoy only loads binaries, so refuse anything else.
        raise ModuleLoadError("invalid wasm module: not a WebAssembly binary (no \\0asm header)")
    digest = hashlib.sha256(wasm).hexdigest()
    with _ENGINE_LOCK:
        cached = _MODULE_CACHE.get(digest)
    if cached is not None:
        return cached
    engine = get_engine()
    try:
        module = wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise ModuleLoadError(f"invalid wasm module: {_first_line(str(exc))}") from exc
    compiled = CompiledModule(module, digest)
    with _ENGINE_LOCK:
        if len(_MODULE_CACHE) >= _MODULE_CACHE_SIZE:
            _MODULE_CACHE.pop(next(iter(_MODULE_CACHE)))
        _MODULE_CACHE[digest] = compiled
    return compiled


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# --------------------------------------------------------------------------------------------
# Host function table: name -> (params, results). All proxy-wasm words are i32 on wasm32.
# --------------------------------------------------------------------------------------------

_I = "i32"
_L = "i64"


def _sig(n: int, *extra: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (tuple([_I] * n) + tuple(extra), (_I,))


HOST_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "proxy_log": _sig(3),
    "proxy_get_log_level": _sig(1),
    "proxy_get_current_time_nanoseconds": _sig(1),
    "proxy_set_tick_period_milliseconds": _sig(1),
    "proxy_get_property": _sig(4),
    "proxy_set_property": _sig(4),
    "proxy_get_buffer_bytes": _sig(5),
    "proxy_get_buffer_status": _sig(3),
    "proxy_set_buffer_bytes": _sig(5),
    "proxy_get_header_map_value": _sig(5),
    "proxy_get_header_map_pairs": _sig(3),
    "proxy_set_header_map_pairs": _sig(3),
    "proxy_add_header_map_value": _sig(5),
    "proxy_replace_header_map_value": _sig(5),
    "proxy_remove_header_map_value": _sig(3),
    "proxy_get_header_map_size": _sig(2),
    "proxy_send_local_response": _sig(8),
    "proxy_continue_stream": _sig(1),
    "proxy_close_stream": _sig(1),
    "proxy_continue_request": _sig(0),
    "proxy_continue_response": _sig(0),
    "proxy_clear_route_cache": _sig(0),
    "proxy_get_configuration": _sig(2),
    "proxy_get_status": _sig(3),
    "proxy_get_shared_data": _sig(5),
    "proxy_set_shared_data": _sig(5),
    "proxy_register_shared_queue": _sig(3),
    "proxy_resolve_shared_queue": _sig(5),
    "proxy_enqueue_shared_queue": _sig(3),
    "proxy_dequeue_shared_queue": _sig(3),
    "proxy_set_effective_context": _sig(1),
    "proxy_done": _sig(0),
    "proxy_define_metric": _sig(4),
    "proxy_increment_metric": _sig(1, _L),
    "proxy_record_metric": _sig(1, _L),
    "proxy_get_metric": _sig(2),
    "proxy_call_foreign_function": _sig(6),
    "proxy_http_call": _sig(10),
    "proxy_grpc_call": _sig(12),
    "proxy_grpc_stream": _sig(9),
    "proxy_grpc_send": _sig(4),
    "proxy_grpc_cancel": _sig(1),
    "proxy_grpc_close": _sig(1),
    "emscripten_notify_memory_growth": ((_I,), ()),
    "pthread_equal": _sig(2),
}

# Calls Envoy only registers for some ABI versions (cpp-host WasmBase::registerCallbacks).
_ABI_SPECIFIC: dict[str, frozenset[AbiVersion]] = {
    "proxy_get_configuration": frozenset({AbiVersion.V0_1_0, AbiVersion.LEGACY}),
    "proxy_continue_request": frozenset({AbiVersion.V0_1_0, AbiVersion.LEGACY}),
    "proxy_continue_response": frozenset({AbiVersion.V0_1_0, AbiVersion.LEGACY}),
    "proxy_clear_route_cache": frozenset({AbiVersion.V0_1_0, AbiVersion.LEGACY}),
    "proxy_continue_stream": frozenset({AbiVersion.V0_2_0, AbiVersion.V0_2_1}),
    "proxy_close_stream": frozenset({AbiVersion.V0_2_0, AbiVersion.V0_2_1}),
    "proxy_get_log_level": frozenset({AbiVersion.V0_2_1}),
}

# Host calls with no offline meaning: they answer Unimplemented and are listed in the report.
_OFFLINE_UNIMPLEMENTED = frozenset(
    {
        "proxy_http_call",
        "proxy_grpc_call",
        "proxy_grpc_stream",
        "proxy_grpc_send",
        "proxy_grpc_cancel",
        "proxy_grpc_close",
    }
)

_WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")

_VALTYPE = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64, "f32": wasmtime.ValType.f32, "f64": wasmtime.ValType.f64}


_FuncTypeCache = dict[tuple[tuple[str, ...], tuple[str, ...]], wasmtime.FuncType]
# Per engine: wasmtime aborts the process when a FuncType registered with one engine is used to
# define a function in another engine's linker.
_FUNCTYPES: weakref.WeakKeyDictionary[wasmtime.Engine, _FuncTypeCache] = weakref.WeakKeyDictionary()


def _functype(params: Sequence[str], results: Sequence[str]) -> wasmtime.FuncType:
    # Building FuncTypes through ctypes is a visible part of a run's cost; linkers only borrow them.
    cache = _FUNCTYPES.setdefault(get_engine(), {})
    key = (tuple(params), tuple(results))
    cached = cache.get(key)
    if cached is None:
        cached = cache[key] = _new_functype(params, results)
    return cached


def _new_functype(params: Sequence[str], results: Sequence[str]) -> wasmtime.FuncType:
    def vt(name: str) -> wasmtime.ValType:
        factory = _VALTYPE.get(name)
        if factory is None:
            raise ModuleLoadError(f"cannot provide an import using value type {name}")
        return factory()

    return wasmtime.FuncType([vt(p) for p in params], [vt(r) for r in results])


# --------------------------------------------------------------------------------------------
# In-memory equivalents of Envoy's process-wide shared data and shared queues.
# --------------------------------------------------------------------------------------------


@dataclass
class _Queue:
    vm_id: bytes
    name: bytes
    context_id: int
    items: list[bytes] = field(default_factory=list)


class SharedStores:
    """Shared key/value data (with CAS) and shared queues, keyed by vm_id like cpp-host's globals.

    A new instance per test case keeps cases independent; pass the same one to several VMs to test
    filters that talk to each other.
    """

    def __init__(self) -> None:
        self.data: dict[tuple[bytes, bytes], tuple[bytes, int]] = {}
        self._cas = 1
        self.queues: dict[int, _Queue] = {}
        self._queue_tokens: dict[tuple[bytes, bytes], int] = {}
        self._next_token = 1

    def _next_cas(self) -> int:
        # cpp-host's nextCas: starts at 1 and skips 0 on wrap-around, since 0 means "no CAS".
        value = self._cas
        self._cas = (self._cas + 1) & U32 or 1
        return value

    def get(self, vm_id: bytes, key: bytes) -> tuple[bytes, int] | None:
        return self.data.get((vm_id, key))

    def set(self, vm_id: bytes, key: bytes, value: bytes, cas: int) -> WasmResult:
        existing = self.data.get((vm_id, key))
        # A CAS only guards an existing key: setting a new key with any cas succeeds, as in cpp-host.
        if existing is not None and cas and cas != existing[1]:
            return WasmResult.CAS_MISMATCH
        self.data[(vm_id, key)] = (value, self._next_cas())
        return WasmResult.OK

    def register_queue(self, vm_id: bytes, name: bytes, context_id: int) -> int:
        token = self._queue_tokens.get((vm_id, name))
        if token is not None:
            self.queues[token].context_id = context_id
            return token
        token = self._next_token
        self._next_token += 1
        self._queue_tokens[(vm_id, name)] = token
        self.queues[token] = _Queue(vm_id, name, context_id)
        return token

    def resolve_queue(self, vm_id: bytes, name: bytes) -> int:
        return self._queue_tokens.get((vm_id, name), 0)


# --------------------------------------------------------------------------------------------
# Header maps with Envoy's HeaderMapImpl semantics.
# --------------------------------------------------------------------------------------------


class HeaderMap:
    """Ordered header list; keys lower-cased on insert, pseudo-headers kept in front like Envoy."""

    def __init__(self, pairs: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.pairs: Pairs = []
        for key, value in pairs:
            self.add(key, value)

    def add(self, key: bytes, value: bytes) -> None:
        key = key.lower()
        if key.startswith(b":"):
            # Envoy keeps pseudo-headers ahead of regular ones whatever the insertion order.
            index = 0
            while index < len(self.pairs) and self.pairs[index][0].startswith(b":"):
                index += 1
            self.pairs.insert(index, (key, value))
        else:
            self.pairs.append((key, value))

    def get(self, key: bytes) -> bytes | None:
        key = key.lower()
        for k, v in self.pairs:
            if k == key:
                # Envoy returns the first value only (its own TODO calls this a potential issue).
                return v
        return None

    def remove(self, key: bytes) -> None:
        key = key.lower()
        self.pairs = [(k, v) for k, v in self.pairs if k != key]

    def replace(self, key: bytes, value: bytes) -> None:
        # setCopy today removes every value of the key and appends the new one at the end.
        self.remove(key)
        self.add(key, value)

    def set_all(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        self.pairs = []
        for key, value in pairs:
            self.add(key, value)

    def byte_size(self) -> int:
        # proxy_get_header_map_size answers Envoy's HeaderMap::byteSize: keys plus values.
        return sum(len(k) + len(v) for k, v in self.pairs)

    def as_message_headers(self) -> tuple[tuple[str, str], ...]:
        return tuple((_text(k), _text(v)) for k, v in self.pairs)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _raw_pairs(pairs: Sequence[tuple[str, str]]) -> Pairs:
    return [(_raw(k), _raw(v)) for k, v in pairs]


# --------------------------------------------------------------------------------------------
# Contexts and the HTTP stream state the host calls read and write.
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    id: int
    parent_id: int
    kind: Literal["vm", "root", "http"]
    stream: _HttpStream | None = None


@dataclass
class _HttpStream:
    """Envoy's per-filter HTTP state: message contents plus which pointers are currently set."""

    context: _Context
    request_headers: HeaderMap
    request_body: bytearray | None
    request_trailers: HeaderMap | None
    response_headers: HeaderMap | None = None
    response_body: bytearray | None = None
    response_trailers: HeaderMap | None = None
    # Envoy's request_headers_ / request_body_buffer_ / ... pointers: a map is reachable from the
    # filter only while its pointer is set (from its callback until the filter lets it go).
    req_headers_on: bool = False
    req_body_on: bool = False
    req_trailers_on: bool = False
    resp_headers_on: bool = False
    resp_body_on: bool = False
    resp_trailers_on: bool = False
    end_of_stream: bool = False
    phase: Literal["request", "response", "log", "done"] = "request"
    access_log_phase: bool = False
    local_reply: LocalReply | None = None
    pending_local_reply: LocalReply | None = None
    reset: bool = False
    continue_requested: set[StreamType] = field(default_factory=set)
    response_code: int | None = None
    response_code_details: str = ""
    start_time_ns: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    responded: bool = False  # a response (upstream or local) went through the response phase
    properties: PropertyTree | None = None


# Sentinel results of a direction's drive.
_DONE, _PAUSED, _STOPPED = "done", "paused", "stopped"


class PluginVM:
    """One Store, one instance, one root context: Envoy's Wasm + root Context for a single plugin."""

    def __init__(
        self,
        compiled: CompiledModule,
        plugin: PluginSpec,
        *,
        options: HostOptions | None = None,
        shared: SharedStores | None = None,
    ) -> None:
        self.compiled = compiled
        self.plugin = plugin
        self.options = options or HostOptions()
        self.shared = shared or SharedStores()
        self.abi = compiled.abi
        self.logs: list[str] = []
        self.unimplemented: list[str] = []
        self.warnings: list[str] = []
        self.tick_period_ms = 0
        self._metrics: dict[int, list[Any]] = {}
        self._metric_next = {0: 0, 1: 1, 2: 2}
        self._clock_offset_ns = 0
        self._deadline = time.monotonic() + self.options.deadline_seconds
        self._vm_id = plugin.vm_id.encode()
        self._contexts: dict[int, _Context] = {0: _Context(0, 0, "vm")}
        self._next_context_id = 1
        self._current: _Context = self._contexts[0]
        self._effective_id = 0
        self._after_call: list[Callable[[], None]] = []
        self._call_depth = 0
        self._restricted = False
        self._temp_plugin = False
        self._stop_next_iteration = False
        self._root: _Context | None = None
        self._started = False
        self._closed = False

        engine = get_engine()
        self._store = wasmtime.Store(engine)
        self._store.set_fuel(self.options.fuel)
        self._store.set_limits(memory_size=self.options.max_memory_bytes)
        wasi = wasmtime.WasiConfig()
        # No argv, no environment, no preopened directories, no sockets. stdout and stderr are
        # captured by the host's own fd_write (see _define_wasi_import), not by WasiConfig's
        # stdout_custom: those callbacks are released on wasmtime's runtime threads, which panics
        # when that happens after the interpreter started shutting down.
        self._store.set_wasi(wasi)
        self._linker = wasmtime.Linker(engine)
        self._linker.allow_shadowing = True
        self._linker.define_wasi()
        self._instance: wasmtime.Instance | None = None
        self._exports: dict[str, wasmtime.Func] = {}
        # Looked up once after instantiation; host calls made before that (from a start section)
        # fall back to asking the caller.
        self._memory_export: wasmtime.Memory | None = None
        self._imported_memory: wasmtime.Memory | None = None
        self._allocator: wasmtime.Func | None = None
        self._abi_warning()

    # ---------------------------------------------------------------- bookkeeping

    def _abi_warning(self) -> None:
        if self.abi is AbiVersion.LEGACY:
            self.warnings.append(
                "module exports no proxy_abi_version_* marker; run as ABI 0.1.0, but Envoy refuses to "
                "load it (\"Missing or unknown Proxy-Wasm ABI version\")"
            )

    def _record_unimplemented(self, name: str) -> None:
        if name not in self.unimplemented:
            self.unimplemented.append(name)

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def now_ns(self) -> int:
        clock = self.options.clock_ns or time.time_ns
        return clock() + self._clock_offset_ns

    # ---------------------------------------------------------------- linking

    def _define_imports(self) -> None:
        for imp in self.compiled.imports:
            if imp.kind != "func":
                self._define_non_func(imp)
            elif imp.module in _WASI_MODULES:
                self._define_wasi_import(imp)
            elif imp.module == "env" and imp.name in HOST_SIGNATURES:
                self._define_host_import(imp)
            else:
                self._warn(
                    f"Envoy provides no {imp.module}.{imp.name} and would refuse to load this module "
                    "(missing import); here it answers Unimplemented"
                )
                self._define_stub(imp, imp.name if imp.module == "env" else f"{imp.module}.{imp.name}")

    def _define_host_import(self, imp: ImportSpec) -> None:
        expected = HOST_SIGNATURES[imp.name]
        if (imp.params, imp.results) != expected:
            self._warn(
                f"env.{imp.name} is imported as ({', '.join(imp.params)}) -> ({', '.join(imp.results)}), "
                f"Envoy provides ({', '.join(expected[0])}) -> ({', '.join(expected[1])}); it answers Unimplemented"
            )
            self._define_stub(imp, imp.name)
            return
        allowed = _ABI_SPECIFIC.get(imp.name)
        if allowed is not None and self.abi not in allowed:
            self._warn(
                f"Envoy does not provide env.{imp.name} to ABI {self.abi.value} modules and would refuse to load "
                "this module (missing import)"
            )
        impl = getattr(self, "_h_" + imp.name)
        self._linker.define_func("env", imp.name, _functype(*expected), self._wrap(imp.name, impl), access_caller=True)

    def _define_wasi_import(self, imp: ImportSpec) -> None:
        if imp.name == "fd_write" and imp.params == (_I, _I, _I, _I) and imp.results == (_I,):
            # Envoy implements fd_write itself, turning stdout/stderr writes into log lines; the
            # host does the same (shadowing wasmtime's) so WASI output lands in the captured logs.
            self._linker.define_func(
                imp.module, "fd_write", _functype(imp.params, imp.results), self._wrap_wasi(self._wasi_fd_write), access_caller=True
            )
            return
        if imp.module == "wasi_snapshot_preview1":
            try:
                self._linker.get(self._store, "wasi_snapshot_preview1", imp.name)
                return
            except wasmtime.WasmtimeError:
                self._define_stub(imp, f"{imp.module}.{imp.name}", errno=True)
                return
        # wasi_unstable (preview 0) shares these functions' signatures with preview 1; alias them
        # when the types agree, otherwise answer ENOSYS instead of failing to link.
        try:
            item = self._linker.get(self._store, "wasi_snapshot_preview1", imp.name)
        except wasmtime.WasmtimeError:
            self._define_stub(imp, f"{imp.module}.{imp.name}", errno=True)
            return
        ty = item.type(self._store) if isinstance(item, wasmtime.Func) else None
        if ty is not None and (_valtypes(ty.params), _valtypes(ty.results)) == (imp.params, imp.results):
            self._linker.define(self._store, "wasi_unstable", imp.name, item)
        else:
            self._define_stub(imp, f"{imp.module}.{imp.name}", errno=True)

    def _define_stub(self, imp: ImportSpec, label: str, errno: bool = False) -> None:
        results = imp.results
        status = WASI_ENOSYS if errno else int(WasmResult.UNIMPLEMENTED)

        def stub(caller: wasmtime.Caller, *args: Any) -> Any:
            self._record_unimplemented(label)
            if not results:
                return None
            values = [status if i == 0 and r == _I else (0.0 if r.startswith("f") else 0) for i, r in enumerate(results)]
            return values[0] if len(values) == 1 else values

        try:
            ty = _functype(imp.params, imp.results)
        except ModuleLoadError as exc:
            raise ModuleLoadError(f"cannot stub import {imp.module}.{imp.name}: {exc}") from exc
        wrapped = self._wrap(label, stub) if imp.module == "env" else self._wrap_wasi(stub)
        self._linker.define_func(imp.module, imp.name, ty, wrapped, access_caller=True)

    def _define_non_func(self, imp: ImportSpec) -> None:
        # Modules built as shared libraries may import their memory or table; give them fresh ones.
        for entry in self.compiled.module.imports:
            if entry.module != imp.module or (entry.name or "") != imp.name:
                continue
            ty = entry.type
            item: Any
            if isinstance(ty, wasmtime.MemoryType):
                item = wasmtime.Memory(self._store, ty)
                # An imported memory is the guest's memory even though it exports none.
                self._imported_memory = item
            elif isinstance(ty, wasmtime.TableType):
                item = wasmtime.Table(self._store, ty, None)
            elif isinstance(ty, wasmtime.GlobalType):
                item = wasmtime.Global(self._store, ty, wasmtime.Val.i32(0) if str(ty.content) == "i32" else wasmtime.Val.i64(0))
            else:
                raise ModuleLoadError(f"cannot provide import {imp.module}.{imp.name}")
            self._linker.define(self._store, imp.module, imp.name, item)
            self._warn(f"module imports {imp.kind} {imp.module}.{imp.name}; the host made a fresh one")
            return

    def _wrap(self, name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
        def host_call(caller: wasmtime.Caller, *args: Any) -> Any:
            self._check_deadline()
            if self._restricted and name != "proxy_log":
                # cpp-host runs _initialize/_start/main with every env call but proxy_log trapped
                # ("restricted_callback"); doing the same catches SDK misuse before Envoy does.
                raise GuestFailure(
                    f"restricted_callback: {name} called while the module starts (_initialize/_start/main); "
                    "Envoy only allows proxy_log and WASI stdio/args/environ/clock/random there"
                )
            try:
                return impl(caller, *args)
            except (GuestFailure, wasmtime.Trap, wasmtime.WasmtimeError):
                raise
            except Exception as exc:  # a host bug must fail the case, not the whole run
                raise GuestFailure(f"host error in {name}: {exc!r}") from exc

        return host_call

    def _wrap_wasi(self, impl: Callable[..., Any]) -> Callable[..., Any]:
        def wasi_call(caller: wasmtime.Caller, *args: Any) -> Any:
            self._check_deadline()
            return impl(caller, *args)

        return wasi_call

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise GuestFailure(
                f"ran out of time: the test case took longer than {self.options.deadline_seconds:g} s "
                "(a loop of host calls?)"
            )

    # ---------------------------------------------------------------- guest memory

    def _memory(self, caller: wasmtime.Caller) -> tuple[int, int]:
        mem = self._memory_export or caller.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            return 0, 0
        length = mem.data_len(caller)
        base = ctypes.cast(mem.data_ptr(caller), ctypes.c_void_p).value or 0
        return base, length

    def _read(self, caller: wasmtime.Caller, ptr: int, size: int) -> bytes | None:
        ptr &= U32
        size &= U32
        base, length = self._memory(caller)
        if ptr + size > length:
            return None
        return ctypes.string_at(base + ptr, size) if size else b""

    def _write(self, caller: wasmtime.Caller, ptr: int, data: bytes) -> bool:
        ptr &= U32
        base, length = self._memory(caller)
        if ptr + len(data) > length:
            return False
        if data:
            ctypes.memmove(base + ptr, data, len(data))
        return True

    def _write_u32(self, caller: wasmtime.Caller, ptr: int, value: int) -> bool:
        return self._write(caller, ptr, struct.pack("<I", value & U32))

    def _write_u64(self, caller: wasmtime.Caller, ptr: int, value: int) -> bool:
        return self._write(caller, ptr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def _alloc(self, caller: wasmtime.Caller, size: int) -> int:
        # cpp-host prefers malloc and falls back to proxy_on_memory_allocate (start() checked one exists).
        func = self._allocator or caller.get("malloc")
        if not isinstance(func, wasmtime.Func):
            func = caller.get("proxy_on_memory_allocate")
        if not isinstance(func, wasmtime.Func):
            return 0
        result = func(caller, size)
        return int(result or 0) & U32

    def _copy_out(self, caller: wasmtime.Caller, data: bytes, ptr_ptr: int, size_ptr: int) -> bool:
        """cpp-host copyToPointerSize: allocate in the guest, copy, write pointer and size."""
        pointer = 0
        if data:
            pointer = self._alloc(caller, len(data))
            if pointer == 0 or not self._write(caller, pointer, data):
                return False
        return self._write_u32(caller, ptr_ptr, pointer) and self._write_u32(caller, size_ptr, len(data))

    # ---------------------------------------------------------------- calling into the guest

    def _ctx(self) -> _Context:
        if self._effective_id:
            ctx = self._contexts.get(self._effective_id)
            if ctx is not None:
                return ctx
        return self._current

    def _has(self, name: str) -> bool:
        return name in self._exports

    def _call(self, context: _Context, name: str, *args: int) -> int | None:
        """Call an export on behalf of `context`; afterwards run the deferred actions like Envoy."""
        func = self._exports.get(name)
        if func is None:
            return None
        params, results = self.compiled.func_exports[name]
        call_args = list(args[: len(params)]) + [0] * max(0, len(params) - len(args))
        if len(params) != len(args):
            self._warn(f"{name} takes {len(params)} parameters; the host passes {len(args)} for ABI {self.abi.value}")
        saved = (self._current, self._effective_id)
        self._current, self._effective_id = context, 0
        self._call_depth += 1
        try:
            value = self._invoke(func, name, call_args)
        except BaseException:
            # Actions queued by a callback that failed never run, as in a failed Envoy VM.
            if self._call_depth == 1:
                self._after_call.clear()
            raise
        finally:
            self._call_depth -= 1
            self._current, self._effective_id = saved
        if self._call_depth == 0:
            self._run_after_call_actions()
        if not results:
            return None
        if isinstance(value, list):
            value = value[0]
        return int(value) & U32 if isinstance(value, int) else None

    def _invoke(self, func: wasmtime.Func, name: str, args: Sequence[int]) -> Any:
        try:
            return func(self._store, *args)
        except wasmtime.ExitTrap as exc:
            raise GuestFailure(f"{name} called proc_exit({exc.code})") from exc
        except wasmtime.Trap as exc:
            raise GuestFailure(self._describe_trap(name, exc)) from exc
        except wasmtime.WasmtimeError as exc:
            raise GuestFailure(f"{name} failed: {_first_line(str(exc))}") from exc

    def _describe_trap(self, name: str, trap: wasmtime.Trap) -> str:
        if trap.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            return (
                f"ran out of fuel in {name}: the test case used more than {self.options.fuel:,} units "
                "(an infinite loop?)"
            )
        message = trap.message
        cause = message.split("Caused by:", 1)[-1].strip() if "Caused by:" in message else message.strip()
        cause = cause.splitlines()[0].strip() if cause else "trap"
        cause = cause.removeprefix("wasm trap: ")
        frames = [line.strip() for line in message.split("Caused by:", 1)[0].splitlines() if line.strip()[:1].isdigit()]
        where = f" (at {' '.join(frames[0].split())})" if frames else ""
        return f"wasm trap in {name}: {cause}{where}"

    def _run_after_call_actions(self) -> None:
        while self._after_call:
            action = self._after_call.pop(0)
            action()

    # ---------------------------------------------------------------- life cycle

    def start(self) -> None:
        """Instantiate, run _initialize/_start (and main), create the root context, start, configure."""
        if self._started:
            return
        self._started = True
        self._define_imports()
        try:
            self._instance = self._linker.instantiate(self._store, self.compiled.module)
        except wasmtime.Trap as exc:
            raise GuestFailure(self._describe_trap("the module's start function", exc)) from exc
        except wasmtime.WasmtimeError as exc:
            raise ModuleLoadError(f"cannot instantiate the module: {_first_line(str(exc))}") from exc
        exports = self._instance.exports(self._store)
        self._exports = {name: item for name, item in exports.items() if isinstance(item, wasmtime.Func)}
        memory = exports.get("memory")
        self._memory_export = memory if isinstance(memory, wasmtime.Memory) else self._imported_memory
        self._allocator = self._exports.get("malloc") or self._exports.get("proxy_on_memory_allocate")
        if not (self._has("malloc") or self._has("proxy_on_memory_allocate")):
            raise ModuleLoadError("Wasm module is missing malloc function (export malloc or proxy_on_memory_allocate)")

        vm_context = self._contexts[0]
        self._restricted = True
        try:
            if self._has("_initialize"):
                self._call(vm_context, "_initialize")
                # Envoy calls main(0, 0) after _initialize when a reactor also exports main.
                if self._has("main"):
                    self._call(vm_context, "main", 0, 0)
            elif self._has("_start"):
                try:
                    self._call(vm_context, "_start")
                except GuestFailure as exc:
                    # A WASI command may end _start with proc_exit(0); that is a normal return.
                    if not isinstance(exc.__cause__, wasmtime.ExitTrap) or exc.__cause__.code != 0:
                        raise
        finally:
            self._restricted = False

        root = self._new_context("root", 0)
        self._root = root
        # ContextBase::onStart: the plugin configuration is readable during on_context_create only.
        self._temp_plugin = True
        try:
            self._call(root, "proxy_on_context_create", root.id, 0)
        finally:
            self._temp_plugin = False
        vm_config_size = len(self.plugin.vm_config)
        if self._has("proxy_on_vm_start") and not self._call(root, "proxy_on_vm_start", root.id, vm_config_size):
            raise GuestFailure("proxy_on_vm_start returned false: Envoy fails the VM start")
        if self._has("proxy_on_configure"):
            self._temp_plugin = True
            try:
                ok = self._call(root, "proxy_on_configure", root.id, len(self.plugin.plugin_config))
            finally:
                self._temp_plugin = False
            if not ok:
                raise GuestFailure("proxy_on_configure returned false: the plugin rejected its configuration")

    def _new_context(self, kind: Literal["root", "http"], parent_id: int) -> _Context:
        ctx = _Context(self._next_context_id, parent_id, kind)
        self._contexts[ctx.id] = ctx
        self._next_context_id += 1
        return ctx

    def tick(self) -> None:
        """Deliver one timer tick to the root context, advancing the host clock by the period."""
        if self._root is None:
            raise ProxyWasmError("the plugin has not started")
        self._clock_offset_ns += self.tick_period_ms * 1_000_000
        self._call(self._root, "proxy_on_tick", self._root.id)

    def close(self) -> None:
        """Drop the store now rather than at interpreter exit (wasmtime finalizers need Python)."""
        if self._closed:
            return
        self._closed = True
        self._exports = {}
        self._instance = None
        self._memory_export = None
        self._allocator = None
        del self._linker
        del self._store

    # ---------------------------------------------------------------- the HTTP exchange

    def http_exchange(self, request: HttpMessage, response: HttpMessage) -> ExchangeResult:
        """Run one request/response pair through the filter, as Envoy's HTTP filter chain would."""
        if self._root is None:
            raise ProxyWasmError("start() the plugin before running an exchange")
        stream = _HttpStream(
            context=self._new_context("http", self._root.id),
            request_headers=HeaderMap(_raw_pairs(request.headers)),
            request_body=bytearray(request.body) if request.body else None,
            request_trailers=HeaderMap(_raw_pairs(request.trailers)) if request.trailers else None,
            start_time_ns=self.now_ns(),
        )
        stream.context.stream = stream
        stream.properties = PropertyTree(self._stream_property_root(stream), overrides=self._overrides())
        error: str | None = None
        paused: Phase = "none"
        try:
            paused = self._run_exchange(stream, response)
        except GuestFailure as exc:
            error = str(exc)
        return self._result(stream, paused, error)

    def _run_exchange(self, stream: _HttpStream, response: HttpMessage) -> Phase:
        ctx = stream.context
        # Context::decodeHeaders -> onCreate: proxy_on_context_create(stream, root).
        self._call(ctx, "proxy_on_context_create", ctx.id, ctx.parent_id)

        outcome = self._drive_request(stream)
        paused: Phase = "none"
        if outcome == _PAUSED:
            paused = "request"
        elif stream.local_reply is not None:
            # Envoy sends a local reply raised from a request callback through the encoder filter
            # chain, this filter included (sendLocalReplyViaFilterChain): the filter's response
            # callbacks see the reply's headers and body, never the declared upstream response.
            if self._drive_response(stream, self._local_reply_message(stream.local_reply)) == _PAUSED:
                paused = "response"
        elif not stream.reset and self._drive_response(stream, response) == _PAUSED:
            paused = "response"

        # End of stream: Envoy runs the access log (proxy_on_log) and then destroys the filter
        # (proxy_on_done, proxy_on_delete). The spec lists on_done first; Envoy's order is used.
        self._access_log(stream)
        stream.phase = "done"
        self._call(ctx, "proxy_on_done", ctx.id)
        self._call(ctx, "proxy_on_delete", ctx.id)
        return paused

    # A direction is a list of events; each is delivered unless a pause stops the filter's own
    # callbacks (a pause from headers) or a local reply/reset ends the stream.
    def _drive_request(self, stream: _HttpStream) -> str:
        events: list[str] = ["headers"]
        if stream.request_body:
            events.append("body")
        if stream.request_trailers is not None and stream.request_trailers.pairs:
            events.append("trailers")
        return self._drive(stream, StreamType.REQUEST, events)

    def _drive_response(self, stream: _HttpStream, message: HttpMessage) -> str:
        stream.phase = "response"
        stream.responded = True
        stream.response_headers = HeaderMap(_raw_pairs(message.headers))
        stream.response_body = bytearray(message.body) if message.body else None
        stream.response_trailers = HeaderMap(_raw_pairs(message.trailers)) if message.trailers else None
        status = stream.response_headers.get(b":status")
        stream.response_code = int(status) if status is not None and status.isdigit() else None
        if stream.local_reply is None:
            stream.response_code_details = "via_upstream"
        events: list[str] = ["headers"]
        if stream.response_body:
            events.append("body")
        if stream.response_trailers is not None and stream.response_trailers.pairs:
            events.append("trailers")
        return self._drive(stream, StreamType.RESPONSE, events)

    def _drive(self, stream: _HttpStream, direction: StreamType, events: list[str]) -> str:
        stopped = False
        blocks_self = False
        cursor = 0
        local_before = stream.local_reply
        while True:
            if stream.reset or stream.local_reply is not local_before:
                return _STOPPED
            if stopped and (blocks_self or cursor >= len(events)):
                if not self._resume_by_ticks(stream, direction, local_before):
                    return _STOPPED if stream.reset or stream.local_reply is not local_before else _PAUSED
                stopped = blocks_self = False
                if stream.reset or stream.local_reply is not local_before:
                    return _STOPPED
                continue
            if cursor >= len(events):
                return _DONE
            event = events[cursor]
            cursor += 1
            status = self._deliver(stream, direction, event, is_last=cursor == len(events))
            if stream.reset or stream.local_reply is not local_before:
                return _STOPPED
            resumed = direction in stream.continue_requested
            stream.continue_requested.discard(direction)
            if event == "headers":
                # ContinueAndEndStream (2) goes on like Continue; every other non-zero value pauses.
                stopped = blocks_self = status not in (FilterHeadersStatus.CONTINUE, FilterHeadersStatus.CONTINUE_AND_END_STREAM)
                if status == FilterHeadersStatus.STOP_ITERATION and self.options.allow_on_headers_stop_iteration:
                    blocks_self = False
            else:
                # A data or trailers pause stops the chain after this filter, but this filter still
                # gets the following callbacks; Continue from them resumes the chain.
                stopped = status != 0
                blocks_self = False
            if resumed:
                # proxy_continue_stream from inside the very callback that paused: Envoy runs the
                # continue as a deferred action once the callback returned, so the stream goes on.
                stopped = blocks_self = False

    def _deliver(self, stream: _HttpStream, direction: StreamType, event: str, is_last: bool) -> int:
        """Call one filter callback and convert its answer like cpp-host's convertVmCallResult*."""
        ctx = stream.context
        request = direction is StreamType.REQUEST
        self._stop_next_iteration = False
        if event == "headers":
            headers = stream.request_headers if request else stream.response_headers
            assert headers is not None
            stream.end_of_stream = is_last
            if request:
                stream.req_headers_on = True
            else:
                stream.resp_headers_on = True
            name = "proxy_on_request_headers" if request else "proxy_on_response_headers"
            count = len(headers.pairs)
            # ABI 0.1.0 has no end_of_stream argument.
            args = (ctx.id, count) if self.abi.is_01 else (ctx.id, count, int(is_last))
            raw = self._call(ctx, name, *args) if self._has(name) else 0
            status = self._convert_headers(raw or 0)
            if status in (FilterHeadersStatus.CONTINUE, FilterHeadersStatus.CONTINUE_AND_END_STREAM):
                if request:
                    stream.req_headers_on = False
                else:
                    stream.resp_headers_on = False
            return status
        if event == "body":
            body = stream.request_body if request else stream.response_body
            assert body is not None
            stream.end_of_stream = is_last
            if request:
                stream.req_body_on = True
                stream.bytes_received = len(body)
            else:
                stream.resp_body_on = True
                stream.bytes_sent = len(body)
            name = "proxy_on_request_body" if request else "proxy_on_response_body"
            raw = self._call(ctx, name, ctx.id, len(body), int(is_last)) if self._has(name) else 0
            data_status = self._convert_data(raw or 0)
            if data_status == FilterDataStatus.CONTINUE:
                if request:
                    stream.req_body_on = False
                else:
                    stream.resp_body_on = False
            return data_status
        trailers = stream.request_trailers if request else stream.response_trailers
        assert trailers is not None
        if request:
            stream.req_trailers_on = True
        else:
            stream.resp_trailers_on = True
        name = "proxy_on_request_trailers" if request else "proxy_on_response_trailers"
        raw = self._call(ctx, name, ctx.id, len(trailers.pairs)) if self._has(name) else 0
        trailers_status = self._convert_trailers(raw or 0)
        if trailers_status == FilterTrailersStatus.CONTINUE:
            if request:
                stream.req_trailers_on = False
            else:
                stream.resp_trailers_on = False
        return trailers_status

    def _convert_headers(self, raw: int) -> int:
        if self._stop_next_iteration or raw > FilterHeadersStatus.STOP_ALL_ITERATION_AND_WATERMARK:
            return FilterHeadersStatus.STOP_ALL_ITERATION_AND_WATERMARK
        if raw == FilterHeadersStatus.STOP_ITERATION and not self.options.allow_on_headers_stop_iteration:
            return FilterHeadersStatus.STOP_ALL_ITERATION_AND_WATERMARK
        return raw

    def _convert_data(self, raw: int) -> int:
        if self._stop_next_iteration or raw > FilterDataStatus.STOP_ITERATION_NO_BUFFER:
            return FilterDataStatus.STOP_ITERATION_NO_BUFFER
        return raw

    def _convert_trailers(self, raw: int) -> int:
        if self._stop_next_iteration or raw > FilterTrailersStatus.STOP_ITERATION:
            return FilterTrailersStatus.STOP_ITERATION
        return raw

    def _resume_by_ticks(self, stream: _HttpStream, direction: StreamType, local_before: LocalReply | None) -> bool:
        """While paused, let proxy_on_tick run (Envoy's timer keeps firing) until it resumes us."""
        if self._root is None or not self._has("proxy_on_tick"):
            return False
        for _ in range(self.options.max_ticks):
            if self.tick_period_ms <= 0:
                return False
            self.tick()
            if stream.reset or stream.local_reply is not local_before:
                return False
            if direction in stream.continue_requested:
                stream.continue_requested.discard(direction)
                return True
        return False

    def _local_reply_message(self, reply: LocalReply) -> HttpMessage:
        """The response Envoy's Utility::sendLocalReply builds from a proxy_send_local_response."""
        headers = HeaderMap([(b":status", str(reply.status).encode())])
        for key, value in reply.headers:
            headers.add(_raw(key), _raw(value))
        if reply.body:
            headers.replace(b"content-length", str(len(reply.body)).encode())
            if headers.get(b"content-type") is None:
                headers.add(b"content-type", b"text/plain")
        return HttpMessage(headers.as_message_headers(), reply.body or None, ())

    def _apply_local_reply(self, stream: _HttpStream, reply: LocalReply) -> None:
        """The deferred half of proxy_send_local_response, run once the callback returned."""
        if stream.phase in ("log", "done"):
            self._warn("proxy_send_local_response after the response completed was ignored")
            return
        if stream.local_reply is not None and stream.phase != "response":
            self._warn("a second proxy_send_local_response was ignored; Envoy only sends the first")
            return
        stream.local_reply = reply
        stream.response_code = reply.status
        stream.response_code_details = reply.details
        if reply.phase == "response":
            # Response headers have started through the chain: Envoy sends this reply straight to
            # the codec (sendDirectLocalReply), so no filter sees it.
            message = self._local_reply_message(reply)
            stream.response_headers = HeaderMap(_raw_pairs(message.headers))
            stream.response_body = bytearray(message.body) if message.body else None
            stream.response_trailers = None

    def _access_log(self, stream: _HttpStream) -> None:
        stream.phase = "log"
        stream.access_log_phase = True
        try:
            self._call(stream.context, "proxy_on_log", stream.context.id)
        finally:
            stream.access_log_phase = False

    def _result(self, stream: _HttpStream | None, paused: Phase, error: str | None) -> ExchangeResult:
        request = HttpMessage()
        response: HttpMessage | None = None
        local_reply = None
        reset = False
        if stream is not None:
            request = HttpMessage(
                stream.request_headers.as_message_headers(),
                bytes(stream.request_body) if stream.request_body is not None else None,
                stream.request_trailers.as_message_headers() if stream.request_trailers is not None else (),
            )
            if stream.response_headers is not None:
                response = HttpMessage(
                    stream.response_headers.as_message_headers(),
                    bytes(stream.response_body) if stream.response_body is not None else None,
                    stream.response_trailers.as_message_headers() if stream.response_trailers is not None else (),
                )
            local_reply = stream.local_reply
            reset = stream.reset
        return ExchangeResult(
            request=request,
            response=response,
            local_reply=local_reply,
            paused=paused,
            reset=reset,
            logs=tuple(self.logs),
            unimplemented=tuple(self.unimplemented),
            warnings=tuple(self.warnings),
            error=error,
            abi_version=self.abi.value,
            tick_period_ms=self.tick_period_ms,
            metrics=tuple((str(m[0]), int(m[2])) for _, m in sorted(self._metrics.items())),
        )

    def failed_result(self, error: str) -> ExchangeResult:
        """A result for a run that failed before or outside an exchange (load, start, configure)."""
        return self._result(None, "none", error)

    # ---------------------------------------------------------------- properties

    def _overrides(self) -> dict[tuple[bytes, ...], bytes]:
        return {parse_override_path(path): value for path, value in self.options.properties}

    def _plugin_properties(self) -> dict[str, Callable[[], PropertyValue]]:
        opts = self.options
        node: dict[str, Callable[[], PropertyValue]] = {
            "id": lambda: opts.node_id,
            "cluster": lambda: opts.node_cluster,
        }
        return {
            "plugin_name": lambda: self.plugin.name,
            "plugin_root_id": lambda: self.plugin.root_id,
            "plugin_vm_id": lambda: self.plugin.vm_id,
            "listener_direction": lambda: Int64(opts.listener_direction),
            "node": lambda: node,
        }

    def _stream_property_root(self, stream: _HttpStream) -> ObjectValue:
        opts = self.options
        root = self._plugin_properties()

        def request_headers() -> HeaderMap | None:
            # RequestWrapper reads request_headers_, or the access-log copy in proxy_on_log.
            return stream.request_headers if (stream.req_headers_on or stream.access_log_phase) else None

        def response_headers() -> HeaderMap | None:
            if stream.response_headers is None:
                return None
            return stream.response_headers if (stream.resp_headers_on or stream.access_log_phase) else None

        def header_value(name: bytes) -> Callable[[], PropertyValue]:
            def get() -> PropertyValue:
                headers = request_headers()
                return headers.get(name) if headers is not None else None

            return get

        def path_part(index: int) -> Callable[[], PropertyValue]:
            def get() -> PropertyValue:
                headers = request_headers()
                path = headers.get(b":path") if headers is not None else None
                if path is None:
                    return None
                head, _, query = path.partition(b"?")
                return head if index == 0 else query

            return get

        def as_map(headers: HeaderMap | None) -> HeaderMapValue:
            # Envoy's HeadersWrapper over a null map reads as an empty map.
            return HeaderMapValue(tuple(headers.pairs) if headers is not None else ())

        def request_size() -> PropertyValue:
            headers = request_headers()
            length = headers.get(b"content-length") if headers is not None else None
            if length is not None and length.isdigit():
                return Int64(int(length))
            return Int64(stream.bytes_received)

        request: dict[str, Callable[[], PropertyValue]] = {
            "path": header_value(b":path"),
            "url_path": path_part(0),
            "query": path_part(1),
            "host": header_value(b":authority"),
            "scheme": header_value(b":scheme"),
            "method": header_value(b":method"),
            "referer": header_value(b"referer"),
            "useragent": header_value(b"user-agent"),
            "id": header_value(b"x-request-id"),
            "headers": lambda: as_map(request_headers()),
            "time": lambda: Int64(stream.start_time_ns),
            "protocol": lambda: opts.protocol,
            "size": request_size,
        }
        response: dict[str, Callable[[], PropertyValue]] = {
            "code": lambda: Int64(stream.response_code) if stream.response_code is not None else None,
            "code_details": lambda: stream.response_code_details or None,
            "flags": lambda: Int64(0),
            "headers": lambda: as_map(response_headers()),
            "trailers": lambda: as_map(
                stream.response_trailers if (stream.resp_trailers_on or stream.access_log_phase) else None
            ),
            "size": lambda: Int64(stream.bytes_sent),
        }

        def peer(address: str) -> dict[str, Callable[[], PropertyValue]]:
            port = address.rsplit(":", 1)[-1]
            return {"address": lambda: address, "port": lambda: Int64(int(port)) if port.isdigit() else None}

        connection: dict[str, Callable[[], PropertyValue]] = {
            "id": lambda: UInt64(opts.connection_id),
            "mtls": lambda: False,
            "requested_server_name": lambda: "",
        }
        root.update(
            {
                "request": lambda: request,
                "response": lambda: response if stream.responded or stream.access_log_phase else None,
                "source": lambda: peer(opts.source_address),
                "destination": lambda: peer(opts.destination_address),
                "connection": lambda: connection,
                "connection_id": lambda: UInt64(opts.connection_id),
                "cluster_name": lambda: opts.cluster_name,
                "route_name": lambda: opts.route_name,
            }
        )
        return root

    def _property_tree(self) -> PropertyTree | None:
        ctx = self._ctx()
        if ctx.stream is not None and ctx.stream.properties is not None:
            return ctx.stream.properties
        return None

    # ---------------------------------------------------------------- map and buffer access

    def _stream_of_ctx(self) -> _HttpStream | None:
        return self._ctx().stream

    def _mutable_map(self, map_type: int) -> HeaderMap | None:
        """Envoy's Context::getMap: the map a filter may change now, or None (BadArgument)."""
        stream = self._stream_of_ctx()
        if stream is None:
            return None
        if map_type == MapType.REQUEST_HEADERS:
            return stream.request_headers if stream.req_headers_on else None
        if map_type == MapType.REQUEST_TRAILERS:
            if stream.req_trailers_on:
                return stream.request_trailers
            if stream.req_body_on and stream.end_of_stream and stream.phase == "request":
                # addDecodedTrailers: a filter may add trailers to a request that ends in its body.
                stream.request_trailers = stream.request_trailers or HeaderMap()
                stream.req_trailers_on = True
                return stream.request_trailers
            return None
        if map_type == MapType.RESPONSE_HEADERS:
            return stream.response_headers if stream.resp_headers_on else None
        if map_type == MapType.RESPONSE_TRAILERS:
            if stream.resp_trailers_on:
                return stream.response_trailers
            if stream.resp_body_on and stream.end_of_stream and stream.phase == "response":
                stream.response_trailers = stream.response_trailers or HeaderMap()
                stream.resp_trailers_on = True
                return stream.response_trailers
            return None
        return None

    def _const_map(self, map_type: int) -> HeaderMap | None:
        """Envoy's Context::getConstMap: like getMap, but proxy_on_log reads the access-log maps."""
        stream = self._stream_of_ctx()
        if stream is None:
            return None
        if stream.access_log_phase:
            if map_type == MapType.REQUEST_HEADERS:
                return stream.request_headers
            if map_type == MapType.RESPONSE_HEADERS:
                return stream.response_headers
            if map_type == MapType.RESPONSE_TRAILERS:
                return stream.response_trailers
            return None
        if map_type == MapType.REQUEST_TRAILERS:
            return stream.request_trailers if stream.req_trailers_on else None
        if map_type == MapType.RESPONSE_TRAILERS:
            return stream.response_trailers if stream.resp_trailers_on else None
        return self._mutable_map(map_type)

    def _buffer(self, buffer_type: int) -> tuple[bytearray | bytes | None, bool]:
        """Envoy's Context::getBuffer -> (data, mutable); (None, False) means NotFound.

        Body buffers outside their callbacks are empty rather than missing, because Envoy hands out
        a buffer wrapper around a null pointer there.
        """
        if buffer_type == BufferType.VM_CONFIGURATION:
            return self.plugin.vm_config, False
        if buffer_type == BufferType.PLUGIN_CONFIGURATION:
            return (self.plugin.plugin_config, False) if self._temp_plugin else (None, False)
        if buffer_type in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
            stream = self._stream_of_ctx()
            if stream is not None:
                if buffer_type == BufferType.HTTP_REQUEST_BODY and stream.req_body_on and stream.request_body is not None:
                    return stream.request_body, True
                if buffer_type == BufferType.HTTP_RESPONSE_BODY and stream.resp_body_on and stream.response_body is not None:
                    return stream.response_body, True
            return b"", False
        if buffer_type == BufferType.HTTP_CALL_RESPONSE_BODY:
            return None, False
        return b"", False

    # ---------------------------------------------------------------- host calls: logging, time

    def _emit_log(self, level: int, message: bytes) -> None:
        if level >= self.options.log_level:
            self.logs.append(f"{LogLevel(level).label}: {message.decode('utf-8', 'replace')}")

    def _h_proxy_log(self, caller: wasmtime.Caller, level: int, ptr: int, size: int) -> int:
        if not 0 <= level <= LogLevel.CRITICAL:
            return WasmResult.BAD_ARGUMENT
        message = self._read(caller, ptr, size)
        if message is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        self._emit_log(level, message)
        return WasmResult.OK

    def _wasi_fd_write(self, caller: wasmtime.Caller, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
        # Envoy's writevImpl: stdout logs at info, stderr at error, one trailing newline dropped.
        if fd == 1:
            level = LogLevel.INFO
        elif fd == 2:
            level = LogLevel.ERROR
        else:
            return WASI_EBADF
        chunks: list[bytes] = []
        for i in range(iovs_len & U32):
            iovec = self._read(caller, iovs + i * 8, 8)
            if iovec is None:
                return WASI_EFAULT
            buf, buf_len = struct.unpack("<II", iovec)
            if buf_len:
                data = self._read(caller, buf, buf_len)
                if data is None:
                    return WASI_EFAULT
                chunks.append(data)
        text = b"".join(chunks)
        written = len(text)
        if text:
            if text.endswith(b"\n"):
                text = text[:-1]
            self._emit_log(level, text)
        if not self._write_u32(caller, nwritten_ptr, written):
            return WASI_EFAULT
        return WASI_ESUCCESS

    def _h_proxy_get_log_level(self, caller: wasmtime.Caller, ptr: int) -> int:
        return WasmResult.OK if self._write_u32(caller, ptr, int(self.options.log_level)) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_get_current_time_nanoseconds(self, caller: wasmtime.Caller, ptr: int) -> int:
        return WasmResult.OK if self._write_u64(caller, ptr, self.now_ns()) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_set_tick_period_milliseconds(self, caller: wasmtime.Caller, period: int) -> int:
        # Timers belong to the root context whichever context sets them.
        self.tick_period_ms = period & U32
        return WasmResult.OK

    # ---------------------------------------------------------------- host calls: properties

    def _h_proxy_get_property(self, caller: wasmtime.Caller, path_ptr: int, path_size: int, ptr_ptr: int, size_ptr: int) -> int:
        path = self._read(caller, path_ptr, path_size)
        if path is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        tree = self._property_tree() or PropertyTree(self._plugin_properties(), overrides=self._overrides())
        status, value = tree.get(path)
        if status != WasmResult.OK:
            return status
        return WasmResult.OK if self._copy_out(caller, value, ptr_ptr, size_ptr) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_set_property(self, caller: wasmtime.Caller, path_ptr: int, path_size: int, value_ptr: int, value_size: int) -> int:
        path = self._read(caller, path_ptr, path_size)
        value = self._read(caller, value_ptr, value_size)
        if path is None or value is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        tree = self._property_tree()
        if tree is None:
            # Envoy stores properties in the stream's filter state; root contexts have none.
            return WasmResult.NOT_FOUND
        return tree.set(path, value)

    # ---------------------------------------------------------------- host calls: buffers

    def _h_proxy_get_buffer_bytes(self, caller: wasmtime.Caller, buffer_type: int, start: int, length: int, ptr_ptr: int, size_ptr: int) -> int:
        if not 0 <= buffer_type <= BufferType.CALL_DATA:
            return WasmResult.BAD_ARGUMENT
        data, _ = self._buffer(buffer_type)
        if data is None:
            return WasmResult.NOT_FOUND
        start &= U32
        length &= U32
        if start > len(data):
            # Envoy would underflow here; refusing is the only sane offline answer.
            return WasmResult.BAD_ARGUMENT
        length = min(length, len(data) - start)
        if length == 0:
            # Envoy returns Ok without touching the out-pointers when nothing is left to copy.
            return WasmResult.OK
        chunk = bytes(data[start : start + length])
        return WasmResult.OK if self._copy_out(caller, chunk, ptr_ptr, size_ptr) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_get_buffer_status(self, caller: wasmtime.Caller, buffer_type: int, length_ptr: int, flags_ptr: int) -> int:
        if not 0 <= buffer_type <= BufferType.CALL_DATA:
            return WasmResult.BAD_ARGUMENT
        data, _ = self._buffer(buffer_type)
        if data is None:
            return WasmResult.NOT_FOUND
        if not self._write_u32(caller, length_ptr, len(data)) or not self._write_u32(caller, flags_ptr, 0):
            return WasmResult.INVALID_MEMORY_ACCESS
        return WasmResult.OK

    def _h_proxy_set_buffer_bytes(self, caller: wasmtime.Caller, buffer_type: int, start: int, length: int, data_ptr: int, data_size: int) -> int:
        if not 0 <= buffer_type <= BufferType.CALL_DATA:
            return WasmResult.BAD_ARGUMENT
        buffer, mutable = self._buffer(buffer_type)
        if buffer is None:
            return WasmResult.NOT_FOUND
        data = self._read(caller, data_ptr, data_size)
        if data is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        if not mutable or not isinstance(buffer, bytearray):
            return WasmResult.BAD_ARGUMENT
        start &= U32
        length &= U32
        # Envoy's Buffer::copyFrom: prepend, replace all, or append; nothing in between.
        if start == 0:
            if length == 0:
                buffer[0:0] = data
            elif length >= len(buffer):
                buffer[:] = data
            else:
                return WasmResult.BAD_ARGUMENT
        elif start >= len(buffer):
            buffer.extend(data)
        else:
            return WasmResult.BAD_ARGUMENT
        return WasmResult.OK

    def _h_proxy_get_configuration(self, caller: wasmtime.Caller, ptr_ptr: int, size_ptr: int) -> int:
        # ABI 0.1.0: the plugin configuration inside on_configure, the VM configuration elsewhere.
        value = self.plugin.plugin_config if self._temp_plugin else self.plugin.vm_config
        return WasmResult.OK if self._copy_out(caller, value, ptr_ptr, size_ptr) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_get_status(self, caller: wasmtime.Caller, code_ptr: int, ptr_ptr: int, size_ptr: int) -> int:
        if not self._write_u32(caller, code_ptr, 0) or not self._copy_out(caller, b"", ptr_ptr, size_ptr):
            return WasmResult.INVALID_MEMORY_ACCESS
        return WasmResult.OK

    # ---------------------------------------------------------------- host calls: header maps

    def _h_proxy_get_header_map_value(self, caller: wasmtime.Caller, map_type: int, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int) -> int:
        if not 0 <= map_type <= MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return WasmResult.BAD_ARGUMENT
        key = self._read(caller, key_ptr, key_size)
        if key is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        headers = self._const_map(map_type)
        stream = self._stream_of_ctx()
        if headers is None:
            if stream is not None and stream.access_log_phase:
                if self.abi.is_01:
                    return WasmResult.OK if self._copy_out(caller, b"", ptr_ptr, size_ptr) else WasmResult.INVALID_MEMORY_ACCESS
                return WasmResult.NOT_FOUND
            # "Requested map type is not currently available."
            return WasmResult.BAD_ARGUMENT
        value = headers.get(key)
        if value is None:
            if self.abi.is_01:
                # ABI 0.1.0 hosts answer a missing header with an empty value and Ok.
                value = b""
            else:
                return WasmResult.NOT_FOUND
        return WasmResult.OK if self._copy_out(caller, value, ptr_ptr, size_ptr) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_get_header_map_pairs(self, caller: wasmtime.Caller, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
        if not 0 <= map_type <= MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return WasmResult.BAD_ARGUMENT
        headers = self._const_map(map_type)
        pairs = headers.pairs if headers is not None else []
        # An absent map reads as no pairs; cpp-host sends an empty map as a zero-length value.
        data = serialize_pairs(pairs) if pairs else b""
        return WasmResult.OK if self._copy_out(caller, data, ptr_ptr, size_ptr) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_set_header_map_pairs(self, caller: wasmtime.Caller, map_type: int, ptr: int, size: int) -> int:
        if not 0 <= map_type <= MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return WasmResult.BAD_ARGUMENT
        data = self._read(caller, ptr, size)
        if data is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        headers = self._mutable_map(map_type)
        if headers is None:
            return WasmResult.BAD_ARGUMENT
        headers.set_all(parse_pairs(data))
        return WasmResult.OK

    def _h_proxy_add_header_map_value(self, caller: wasmtime.Caller, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int) -> int:
        return self._modify_map(caller, map_type, key_ptr, key_size, value_ptr, value_size, "add")

    def _h_proxy_replace_header_map_value(self, caller: wasmtime.Caller, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int) -> int:
        return self._modify_map(caller, map_type, key_ptr, key_size, value_ptr, value_size, "replace")

    def _h_proxy_remove_header_map_value(self, caller: wasmtime.Caller, map_type: int, key_ptr: int, key_size: int) -> int:
        return self._modify_map(caller, map_type, key_ptr, key_size, 0, 0, "remove")

    def _modify_map(self, caller: wasmtime.Caller, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int, op: str) -> int:
        if not 0 <= map_type <= MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return WasmResult.BAD_ARGUMENT
        key = self._read(caller, key_ptr, key_size)
        value = self._read(caller, value_ptr, value_size) if op != "remove" else b""
        if key is None or value is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        headers = self._mutable_map(map_type)
        if headers is None:
            return WasmResult.BAD_ARGUMENT
        if op == "add":
            headers.add(key, value)
        elif op == "replace":
            headers.replace(key, value)
        else:
            headers.remove(key)
        return WasmResult.OK

    def _h_proxy_get_header_map_size(self, caller: wasmtime.Caller, map_type: int, size_ptr: int) -> int:
        if not 0 <= map_type <= MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return WasmResult.BAD_ARGUMENT
        headers = self._mutable_map(map_type)
        if headers is None:
            return WasmResult.BAD_ARGUMENT
        return WasmResult.OK if self._write_u32(caller, size_ptr, headers.byte_size()) else WasmResult.INVALID_MEMORY_ACCESS

    # ---------------------------------------------------------------- host calls: stream control

    def _h_proxy_send_local_response(
        self,
        caller: wasmtime.Caller,
        status: int,
        details_ptr: int,
        details_size: int,
        body_ptr: int,
        body_size: int,
        headers_ptr: int,
        headers_size: int,
        grpc_status: int,
    ) -> int:
        details = self._read(caller, details_ptr, details_size)
        body = self._read(caller, body_ptr, body_size)
        raw_headers = self._read(caller, headers_ptr, headers_size)
        if details is None or body is None or raw_headers is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        # Whatever the callback returns next, the chain stops (cpp-host stopNextIteration).
        self._stop_next_iteration = True
        stream = self._stream_of_ctx()
        if stream is None:
            # Envoy only acts when the context has decoder callbacks, i.e. is an HTTP stream.
            self._warn("proxy_send_local_response from a context without an HTTP stream did nothing")
            return WasmResult.OK
        grpc = grpc_status & U32
        reply = LocalReply(
            status=status & U32,
            body=body,
            headers=tuple((_text(k), _text(v)) for k, v in parse_pairs(raw_headers)),
            # Envoy replaces whitespace in details so they stay one access-log token.
            details="_".join(_text(details).split()) if details else "",
            # SDKs pass -1 for "no gRPC status"; Envoy maps anything outside 0..16 to none.
            grpc_status=grpc if grpc <= 16 else None,
            phase="response" if stream.phase == "response" else "request",
        )
        self._after_call.append(lambda: self._apply_local_reply(stream, reply))
        return WasmResult.OK

    def _continue(self, stream_type: int) -> int:
        stream = self._stream_of_ctx()
        if stream_type in (StreamType.REQUEST, StreamType.RESPONSE):
            if stream is not None:
                direction = StreamType(stream_type)
                self._after_call.append(lambda: stream.continue_requested.add(direction))
                # Context::continueStream drops the request pointers whichever direction resumes.
                stream.req_headers_on = stream.req_body_on = stream.req_trailers_on = False
            return WasmResult.OK
        if stream_type == StreamType.DOWNSTREAM:
            return WasmResult.OK
        if stream_type == StreamType.UPSTREAM:
            return WasmResult.UNIMPLEMENTED
        return WasmResult.BAD_ARGUMENT

    def _h_proxy_continue_stream(self, caller: wasmtime.Caller, stream_type: int) -> int:
        if not 0 <= stream_type <= StreamType.UPSTREAM:
            return WasmResult.BAD_ARGUMENT
        return self._continue(stream_type)

    def _h_proxy_continue_request(self, caller: wasmtime.Caller) -> int:
        return self._continue(StreamType.REQUEST)

    def _h_proxy_continue_response(self, caller: wasmtime.Caller) -> int:
        return self._continue(StreamType.RESPONSE)

    def _h_proxy_close_stream(self, caller: wasmtime.Caller, stream_type: int) -> int:
        if not 0 <= stream_type <= StreamType.UPSTREAM:
            return WasmResult.BAD_ARGUMENT
        stream = self._stream_of_ctx()
        if stream is not None and stream_type in (StreamType.REQUEST, StreamType.RESPONSE):
            self._after_call.append(lambda: setattr(stream, "reset", True))
        return WasmResult.OK

    def _h_proxy_clear_route_cache(self, caller: wasmtime.Caller) -> int:
        return WasmResult.OK

    def _h_proxy_set_effective_context(self, caller: wasmtime.Caller, context_id: int) -> int:
        context_id &= U32
        if context_id not in self._contexts:
            return WasmResult.BAD_ARGUMENT
        self._effective_id = context_id
        return WasmResult.OK

    def _h_proxy_done(self, caller: wasmtime.Caller) -> int:
        # Only a root context draining after on_done returned false can be "done"; the offline
        # host never drains root contexts, so this is always NotFound, as for stream contexts.
        return WasmResult.NOT_FOUND

    # ---------------------------------------------------------------- host calls: shared state

    def _h_proxy_get_shared_data(self, caller: wasmtime.Caller, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int, cas_ptr: int) -> int:
        key = self._read(caller, key_ptr, key_size)
        if key is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        entry = self.shared.get(self._vm_id, key)
        if entry is None:
            return WasmResult.NOT_FOUND
        value, cas = entry
        if not self._copy_out(caller, value, ptr_ptr, size_ptr) or not self._write_u32(caller, cas_ptr, cas):
            return WasmResult.INVALID_MEMORY_ACCESS
        return WasmResult.OK

    def _h_proxy_set_shared_data(self, caller: wasmtime.Caller, key_ptr: int, key_size: int, value_ptr: int, value_size: int, cas: int) -> int:
        key = self._read(caller, key_ptr, key_size)
        value = self._read(caller, value_ptr, value_size)
        if key is None or value is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        return self.shared.set(self._vm_id, key, value, cas & U32)

    def _h_proxy_register_shared_queue(self, caller: wasmtime.Caller, name_ptr: int, name_size: int, token_ptr: int) -> int:
        name = self._read(caller, name_ptr, name_size)
        if name is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        ctx = self._ctx()
        # onQueueReady is delivered to the root context, even when a stream registered the queue.
        owner = ctx.id if ctx.kind == "root" else ctx.parent_id
        token = self.shared.register_queue(self._vm_id, name, owner)
        return WasmResult.OK if self._write_u32(caller, token_ptr, token) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_resolve_shared_queue(self, caller: wasmtime.Caller, vm_ptr: int, vm_size: int, name_ptr: int, name_size: int, token_ptr: int) -> int:
        vm_id = self._read(caller, vm_ptr, vm_size)
        name = self._read(caller, name_ptr, name_size)
        if vm_id is None or name is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        token = self.shared.resolve_queue(vm_id or self._vm_id, name)
        if token == 0:
            return WasmResult.NOT_FOUND
        return WasmResult.OK if self._write_u32(caller, token_ptr, token) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_enqueue_shared_queue(self, caller: wasmtime.Caller, token: int, value_ptr: int, value_size: int) -> int:
        value = self._read(caller, value_ptr, value_size)
        if value is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        queue = self.shared.queues.get(token & U32)
        if queue is None:
            return WasmResult.NOT_FOUND
        queue.items.append(value)
        owner = self._contexts.get(queue.context_id)
        if owner is not None and queue.vm_id == self._vm_id:
            # Envoy posts onQueueReady to the owner's dispatcher: it runs after the current call.
            queue_token = token & U32

            def notify() -> None:
                self._call(owner, "proxy_on_queue_ready", owner.id, queue_token)

            self._after_call.append(notify)
        return WasmResult.OK

    def _h_proxy_dequeue_shared_queue(self, caller: wasmtime.Caller, token: int, ptr_ptr: int, size_ptr: int) -> int:
        queue = self.shared.queues.get(token & U32)
        if queue is None:
            return WasmResult.NOT_FOUND
        if not queue.items:
            return WasmResult.EMPTY
        value = queue.items.pop(0)
        return WasmResult.OK if self._copy_out(caller, value, ptr_ptr, size_ptr) else WasmResult.INVALID_MEMORY_ACCESS

    # ---------------------------------------------------------------- host calls: metrics

    def _h_proxy_define_metric(self, caller: wasmtime.Caller, metric_type: int, name_ptr: int, name_size: int, id_ptr: int) -> int:
        if not 0 <= metric_type <= 2:
            return WasmResult.BAD_ARGUMENT
        name = self._read(caller, name_ptr, name_size)
        if name is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        # Envoy keeps the metric type in the low two bits of the id, stepping ids by 4.
        self._metric_next[metric_type] += 4
        metric_id = self._metric_next[metric_type]
        self._metrics[metric_id] = [_text(name), metric_type, 0]
        return WasmResult.OK if self._write_u32(caller, id_ptr, metric_id) else WasmResult.INVALID_MEMORY_ACCESS

    def _h_proxy_increment_metric(self, caller: wasmtime.Caller, metric_id: int, offset: int) -> int:
        metric = self._metrics.get(metric_id & U32)
        if metric is None:
            return WasmResult.NOT_FOUND
        if metric[1] == 0:
            if offset <= 0:
                return WasmResult.BAD_ARGUMENT
            metric[2] += offset
            return WasmResult.OK
        if metric[1] == 1:
            metric[2] += offset
            return WasmResult.OK
        return WasmResult.BAD_ARGUMENT

    def _h_proxy_record_metric(self, caller: wasmtime.Caller, metric_id: int, value: int) -> int:
        metric = self._metrics.get(metric_id & U32)
        if metric is None:
            return WasmResult.NOT_FOUND
        value &= 0xFFFFFFFFFFFFFFFF
        if metric[1] == 0:
            metric[2] += value
        else:
            # Gauges are set; histograms keep the last sample, enough to assert on offline.
            metric[2] = value
        return WasmResult.OK

    def _h_proxy_get_metric(self, caller: wasmtime.Caller, metric_id: int, result_ptr: int) -> int:
        metric = self._metrics.get(metric_id & U32)
        if metric is None:
            return WasmResult.NOT_FOUND
        if metric[1] == 2:
            return WasmResult.BAD_ARGUMENT
        return WasmResult.OK if self._write_u64(caller, result_ptr, metric[2]) else WasmResult.INVALID_MEMORY_ACCESS

    # ---------------------------------------------------------------- host calls: the rest

    def _h_proxy_call_foreign_function(self, caller: wasmtime.Caller, name_ptr: int, name_size: int, args_ptr: int, args_size: int, ptr_ptr: int, size_ptr: int) -> int:
        name = self._read(caller, name_ptr, name_size)
        if name is None or self._read(caller, args_ptr, args_size) is None:
            return WasmResult.INVALID_MEMORY_ACCESS
        # Envoy's foreign functions (compression, declare_property, ...) are not modelled.
        self._record_unimplemented(f"proxy_call_foreign_function({_text(name)})")
        return WasmResult.NOT_FOUND

    def _offline(self, name: str) -> int:
        self._record_unimplemented(name)
        return WasmResult.UNIMPLEMENTED

    def _h_proxy_http_call(self, caller: wasmtime.Caller, *args: int) -> int:
        return self._offline("proxy_http_call")

    def _h_proxy_grpc_call(self, caller: wasmtime.Caller, *args: int) -> int:
        return self._offline("proxy_grpc_call")

    def _h_proxy_grpc_stream(self, caller: wasmtime.Caller, *args: int) -> int:
        return self._offline("proxy_grpc_stream")

    def _h_proxy_grpc_send(self, caller: wasmtime.Caller, *args: int) -> int:
        return self._offline("proxy_grpc_send")

    def _h_proxy_grpc_cancel(self, caller: wasmtime.Caller, *args: int) -> int:
        return self._offline("proxy_grpc_cancel")

    def _h_proxy_grpc_close(self, caller: wasmtime.Caller, *args: int) -> int:
        return self._offline("proxy_grpc_close")

    def _h_emscripten_notify_memory_growth(self, caller: wasmtime.Caller, index: int) -> None:
        return None

    def _h_pthread_equal(self, caller: wasmtime.Caller, left: int, right: int) -> int:
        return int(left == right)


def run_http_exchange(
    compiled: CompiledModule,
    plugin: PluginSpec,
    request: HttpMessage,
    response: HttpMessage,
    *,
    options: HostOptions | None = None,
    shared: SharedStores | None = None,
) -> ExchangeResult:
    """Start a fresh VM for `plugin`, run one exchange, and always return a result (never raise
    for guest faults: a trap, fuel exhaustion or a refused configuration lands in `error`)."""
    vm = PluginVM(compiled, plugin, options=options, shared=shared)
    try:
        try:
            vm.start()
        except ProxyWasmError as exc:
            return vm.failed_result(str(exc))
        return vm.http_exchange(request, response)
    finally:
        vm.close()
