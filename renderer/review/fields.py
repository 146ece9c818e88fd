"""An object's fields as a reviewer reads them (one leaf a line, JSON inside strings opened up, a binary
as its size and sha256), the fields that differ between two objects, and what changed in a module."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from .effects import Obj
from .model import FieldChange, ModuleChange

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LONG_VALUE = 100


def _child(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if text == "":
        return '""'
    if len(text) > _LONG_VALUE:
        return f"{text[:_LONG_VALUE - 20]}... ({len(text):,} characters)"
    return text


def decoded(encoded: Any) -> bytes | None:
    try:
        return base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        return None


def binary_summary(encoded: Any) -> str:
    """A binaryData value as a reviewer needs it: how big the module is and which one it is."""
    raw = decoded(encoded)
    if raw is None:
        return f"not base64 ({len(str(encoded)):,} characters)"
    return f"{len(raw):,} bytes, sha256 of the binary {hashlib.sha256(raw).hexdigest()[:12]}"


def _embedded_json(value: str) -> Any:
    # Istio's userVolume annotations and the Wasm configuration are JSON inside a string: diffing
    # inside them shows the one ConfigMap name that changed instead of two long lines.
    if value[:1] not in "{[":
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, (dict, list)) and parsed else None


def _flatten(value: Any, path: str, out: dict[str, str | tuple[str, ...]]) -> None:
    if isinstance(value, dict):
        if not value:
            out[path] = "{}"
        for key, item in value.items():
            child = _child(path, str(key))
            if path == "binaryData":
                out[child] = binary_summary(item)
            else:
                _flatten(item, child, out)
    elif isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            out[path] = tuple(_shown(v) for v in value)
        else:
            for index, item in enumerate(value):
                _flatten(item, f"{path}[{index}]", out)
    elif isinstance(value, str) and (parsed := _embedded_json(value)) is not None:
        _flatten(parsed, f"{path} (JSON) ", out)
    else:
        out[path] = _shown(value)


def leaves(obj: Obj) -> dict[str, str | tuple[str, ...]]:
    out: dict[str, str | tuple[str, ...]] = {}
    _flatten(dict(obj), "", out)
    for header in ("apiVersion", "kind", "metadata.name", "metadata.namespace"):  # in the title already
        out.pop(header, None)
    return {path.replace(" (JSON) .", " (JSON) ").rstrip(): value for path, value in out.items()}


def as_text(value: str | tuple[str, ...]) -> str:
    return ", ".join(value) if isinstance(value, tuple) else value


def field_changes(old: Obj, new: Obj) -> tuple[FieldChange, ...]:
    before, after = leaves(old), leaves(new)
    changes: list[FieldChange] = []
    for path in [*after, *(p for p in before if p not in after)]:
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        if isinstance(a, tuple) and isinstance(b, tuple) and set(a) != set(b):
            # A list of names (a kustomization's resources): what joined and what left.
            changes += [FieldChange(path, item, None) for item in a if item not in b]
            changes += [FieldChange(path, None, item) for item in b if item not in a]
        else:
            changes.append(FieldChange(path, None if a is None else as_text(a), None if b is None else as_text(b)))
    return tuple(changes)


def module_bytes(obj: Obj | None) -> bytes | None:
    data = obj.get("binaryData") if obj else None
    if not isinstance(data, dict) or len(data) != 1:
        return None
    return decoded(next(iter(data.values())))


def module_change(old: bytes | None, new: bytes) -> ModuleChange | None:
    from ..wasm import code_sha256, inspect_wasm  # wasmtime only when a binary changed

    after = inspect_wasm(new)
    if not after.valid:
        return None
    if old is None:
        return ModuleChange((None, after.abi_version), after.callbacks, (), after.imports, (), None)
    before = inspect_wasm(old)
    if not before.valid:
        return None
    same = code_sha256(old) == code_sha256(new) and code_sha256(new) is not None

    def delta(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(x for x in b if x not in a), tuple(x for x in a if x not in b)

    callbacks = delta(before.callbacks, after.callbacks)
    imports = delta(before.imports, after.imports)
    return ModuleChange((before.abi_version, after.abi_version), *callbacks, *imports, same)
