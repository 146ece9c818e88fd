"""Embedded proxy-wasm host: runs filters offline on wasmtime the way Envoy would run them."""

from __future__ import annotations

from .abi import (
    AbiVersion,
    BufferType,
    LogLevel,
    MapType,
    StreamType,
    WasmResult,
    parse_pairs,
    serialize_pairs,
)
from .host import (
    DEFAULT_FUEL,
    CompiledModule,
    ExchangeResult,
    GuestFailure,
    HostOptions,
    HttpMessage,
    LocalReply,
    ModuleLoadError,
    PluginSpec,
    PluginVM,
    ProxyWasmError,
    SharedStores,
    compile_module,
    get_engine,
    run_http_exchange,
)

__all__ = [
    "DEFAULT_FUEL",
    "AbiVersion",
    "BufferType",
    "CompiledModule",
    "ExchangeResult",
    "GuestFailure",
    "HostOptions",
    "HttpMessage",
    "LocalReply",
    "LogLevel",
    "MapType",
    "ModuleLoadError",
    "PluginSpec",
    "PluginVM",
    "ProxyWasmError",
    "SharedStores",
    "StreamType",
    "WasmResult",
    "compile_module",
    "get_engine",
    "parse_pairs",
    "run_http_exchange",
    "serialize_pairs",
]
