"""Proxy-Wasm ABI constants and the serialized-pairs codec, as Envoy (proxy-wasm-cpp-host) uses them.

Values come from the proxy-wasm spec (abi-versions/v0.2.1) and the cpp-host sources; the enums are
IntEnums so they compare equal to the raw i32 the guest passes or receives.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from enum import Enum, IntEnum


class WasmResult(IntEnum):
    """proxy_status_t / WasmResult: what every host call returns."""

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class LogLevel(IntEnum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5

    @property
    def label(self) -> str:
        # Envoy prints spdlog's short names; "warning"/"error" keep the captured lines greppable.
        return _LEVEL_LABELS[self]


_LEVEL_LABELS = {
    LogLevel.TRACE: "trace",
    LogLevel.DEBUG: "debug",
    LogLevel.INFO: "info",
    LogLevel.WARN: "warn",
    LogLevel.ERROR: "error",
    LogLevel.CRITICAL: "critical",
}


class MapType(IntEnum):
    """proxy_map_type_t: which header map a header call addresses."""

    REQUEST_HEADERS = 0
    REQUEST_TRAILERS = 1
    RESPONSE_HEADERS = 2
    RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class BufferType(IntEnum):
    """proxy_buffer_type_t."""

    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8


class StreamType(IntEnum):
    """proxy_stream_type_t, the argument of proxy_continue_stream / proxy_close_stream."""

    REQUEST = 0
    RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class FilterHeadersStatus(IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1
    CONTINUE_AND_END_STREAM = 2
    STOP_ALL_ITERATION_AND_BUFFER = 3
    STOP_ALL_ITERATION_AND_WATERMARK = 4


class FilterDataStatus(IntEnum):
    CONTINUE = 0
    STOP_ITERATION_AND_BUFFER = 1
    STOP_ITERATION_AND_WATERMARK = 2
    STOP_ITERATION_NO_BUFFER = 3


class FilterTrailersStatus(IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1


class AbiVersion(str, Enum):
    """Which ABI the module declared; LEGACY is "no marker export but proxy_on_* callbacks"."""

    V0_1_0 = "0.1.0"
    V0_2_0 = "0.2.0"
    V0_2_1 = "0.2.1"
    LEGACY = "legacy"

    @property
    def is_01(self) -> bool:
        # Legacy modules predate the marker exports, so they speak the 0.1.0 dialect.
        return self in (AbiVersion.V0_1_0, AbiVersion.LEGACY)


ABI_MARKERS: dict[str, AbiVersion] = {
    "proxy_abi_version_0_1_0": AbiVersion.V0_1_0,
    "proxy_abi_version_0_2_0": AbiVersion.V0_2_0,
    "proxy_abi_version_0_2_1": AbiVersion.V0_2_1,
}


def detect_abi(export_names: Iterable[str]) -> AbiVersion | None:
    """The ABI a module speaks, from its export names; None when it is not a proxy-wasm module."""
    names = set(export_names)
    found = [version for marker, version in ABI_MARKERS.items() if marker in names]
    if found:
        # cpp-host checks the markers newest-last; a module exporting several is unusual, and the
        # newest one is what its SDK was built against.
        return max(found, key=lambda v: list(ABI_MARKERS.values()).index(v))
    if any(name.startswith("proxy_on_") for name in names):
        return AbiVersion.LEGACY
    return None


# WASI errno values the host's own fd_write returns (spec "wasi_errno_t").
WASI_ESUCCESS = 0
WASI_EBADF = 8
WASI_EFAULT = 21
WASI_ENOSYS = 52

U32 = 0xFFFFFFFF


def serialize_pairs(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Envoy's marshalPairs: count, (key_len, value_len)*, then NUL-terminated keys and values."""
    out = bytearray(struct.pack("<I", len(pairs)))
    for key, value in pairs:
        out += struct.pack("<II", len(key), len(value))
    for key, value in pairs:
        out += key + b"\x00" + value + b"\x00"
    return bytes(out)


def parse_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """Envoy's toPairs: a malformed or truncated buffer yields no pairs instead of an error.

    Envoy trusts the lengths once the header fits; here a short body also yields no pairs, because
    reading past the guest's buffer is what Envoy would do and Python cannot.
    """
    if len(data) < 4:
        return []
    (count,) = struct.unpack_from("<I", data, 0)
    header_end = 4 + count * 8
    if header_end > len(data):
        return []
    sizes = [struct.unpack_from("<II", data, 4 + i * 8) for i in range(count)]
    pos = header_end
    pairs: list[tuple[bytes, bytes]] = []
    for key_len, value_len in sizes:
        key_end = pos + key_len
        value_start = key_end + 1
        value_end = value_start + value_len
        if value_end > len(data):
            return []
        pairs.append((bytes(data[pos:key_end]), bytes(data[value_start:value_end])))
        pos = value_end + 1
    return pairs
