"""proxy_get_property: the attribute tree Envoy exposes, rebuilt from what the offline host knows.

Envoy walks a NUL-separated path through CEL values and serializes the leaf: strings and bytes as
they are, integers as 8 little-endian bytes, booleans as one byte, header maps as serialized pairs.
Top-level objects that Envoy cannot list (request, source, ...) fail with SerializationFailure.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Union

from .abi import WasmResult, serialize_pairs


class Int64(int):
    """A CEL int64 (also timestamps and durations, which Envoy sends as int64 nanoseconds)."""


class UInt64(int):
    """A CEL uint64 (connection ids)."""


@dataclass(frozen=True)
class HeaderMapValue:
    """A header map seen as a CEL map: lookups join repeated headers with ',' like Envoy."""

    pairs: tuple[tuple[bytes, bytes], ...]

    def lookup(self, key: bytes) -> bytes | None:
        wanted = key.lower()
        values = [v for k, v in self.pairs if k == wanted]
        return b",".join(values) if values else None


# A node of the tree: leaves, header maps, nested objects, or a thunk computing one on demand.
PropertyValue = Union[str, bytes, bool, Int64, UInt64, HeaderMapValue, "ObjectValue", None]
ObjectValue = Mapping[str, Callable[[], PropertyValue]]


def serialize_value(value: PropertyValue) -> tuple[WasmResult, bytes]:
    """Envoy's serializeValue for the value types the offline host produces."""
    if isinstance(value, bool):
        return WasmResult.OK, b"\x01" if value else b"\x00"
    if isinstance(value, UInt64):
        return WasmResult.OK, struct.pack("<Q", int(value) & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, Int64):
        return WasmResult.OK, struct.pack("<q", int(value))
    if isinstance(value, str):
        return WasmResult.OK, value.encode()
    if isinstance(value, bytes):
        return WasmResult.OK, value
    if isinstance(value, HeaderMapValue):
        return WasmResult.OK, serialize_pairs(list(value.pairs))
    # Objects (request, source, ...) are CEL maps whose keys Envoy cannot list.
    return WasmResult.SERIALIZATION_FAILURE, b""


def split_path(raw: bytes) -> list[bytes]:
    """Split a property path like Envoy: NUL separated; the C++ SDK's trailing NUL ends the walk."""
    parts = raw.split(b"\x00")
    if parts and parts[-1] == b"" and len(parts) > 1:
        parts.pop()
    return parts


@dataclass
class PropertyTree:
    """Resolves paths against a root object; `filter_state` holds what proxy_set_property stored."""

    root: ObjectValue
    filter_state: dict[bytes, bytes] = field(default_factory=dict)
    overrides: Mapping[tuple[bytes, ...], bytes] = field(default_factory=dict)

    def get(self, raw_path: bytes) -> tuple[WasmResult, bytes]:
        parts = split_path(raw_path)
        if not raw_path or not parts:
            return WasmResult.NOT_FOUND, b""
        override = self.overrides.get(tuple(parts))
        if override is not None:
            return WasmResult.OK, override
        head = parts[0].decode("utf-8", "replace")
        thunk = self.root.get(head)
        if thunk is None:
            # Envoy falls back to filter state written by proxy_set_property ("wasm." prefix).
            stored = self.filter_state.get(parts[0])
            if stored is None or len(parts) > 1:
                return WasmResult.NOT_FOUND, b""
            return WasmResult.OK, stored
        value: PropertyValue = thunk()
        for part in parts[1:]:
            if isinstance(value, HeaderMapValue):
                found = value.lookup(part)
                if found is None:
                    return WasmResult.NOT_FOUND, b""
                value = found
            elif isinstance(value, Mapping):
                child = value.get(part.decode("utf-8", "replace"))
                if child is None:
                    return WasmResult.NOT_FOUND, b""
                value = child()
            else:
                return WasmResult.NOT_FOUND, b""
            if value is None:
                return WasmResult.NOT_FOUND, b""
        if value is None:
            return WasmResult.NOT_FOUND, b""
        return serialize_value(value)

    def set(self, raw_path: bytes, value: bytes) -> WasmResult:
        # Envoy keys filter state by the raw path; reading it back only works for one segment.
        self.filter_state[raw_path.rstrip(b"\x00")] = value
        return WasmResult.OK


def parse_override_path(dotted: str) -> tuple[bytes, ...]:
    """'node.metadata.NAME' -> (b'node', b'metadata', b'NAME'), the key form of PropertyTree.overrides."""
    return tuple(part.encode() for part in dotted.split("."))
