"""What a .wasm file is, as far as shipping it to Envoy is concerned.

Validity comes from the real wasmtime runtime; the few facts proxy-wasm cares about (the ABI
marker export, the proxy_on_* callbacks, the import modules) come from reading the module's
import and export sections directly.

Why not just compile with wasmtime.Module and read its imports/exports: Cranelift compiles a
1 MiB module in about 0.8 s on a 2-core machine, while wasmtime.Module.validate checks the same
bytes in under 10 ms, and the two sections are a few dozen bytes of trivially parsed records.
A render touches thousands of services, so the default is validate + parse; compile=True does
the full compilation for whoever wants that stronger (and slower) guarantee. Should the section
reader meet an encoding it does not know (a future proposal), it falls back to compiling, so an
unusual module costs time, never a wrong answer.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# The object limits the inspection reports against. objects.py and spec.py import the limits and the
# annotation size from here, hence the explicit re-exports.
from .apply_size import (
    ANNOTATION_LIMIT,
    APPLY_NAMESPACE,
    CLIENT_SIDE_APPLY_LIMIT,
    CONFIGMAP_LIMIT,
    client_side_apply_size,
)
from .apply_size import last_applied_annotations_size as last_applied_annotations_size

if TYPE_CHECKING:
    import wasmtime


# A module delivered as an image has no ConfigMap limit; this bound only keeps a hostile (say, sparse)
# file from being read into memory. Real filters reach ~10 MB (Go).
MODULE_LIMIT = 128 * 1024 * 1024

WASM_MAGIC = b"\0asm"

ABI_EXPORTS = {
    "proxy_abi_version_0_1_0": "0.1.0",
    "proxy_abi_version_0_2_0": "0.2.0",
    "proxy_abi_version_0_2_1": "0.2.1",
}
CALLBACK_PREFIX = "proxy_on_"
# Per the ABI, a host calls _initialize when it is exported and _start only otherwise.
START_EXPORTS = ("_initialize", "_start")

_EXPORT_KIND_FUNC = 0x00


@dataclass(frozen=True)
class WasmReport:
    """Facts about one binary. Derived verdicts are properties, so they cannot disagree."""

    size: int
    sha256: str
    is_wasm: bool
    valid: bool
    error: str | None
    abi_version: str | None
    callbacks: tuple[str, ...]
    import_modules: tuple[str, ...]
    start: str | None
    exported_functions: tuple[str, ...]
    imports: tuple[str, ...] = ()  # "module.name" of every import
    code_sha256: str | None = None  # without custom sections (code_sha256()); only with filter_name
    # The annotations' total under client-side apply, for the ConfigMap wasm-gitops renders for this
    # binary as filter `apply_filter` in namespace default; None when not asked for.
    apply_size: int | None = None
    apply_filter: str = ""

    @property
    def legacy(self) -> bool:
        """Callbacks without an ABI marker: modules built before the marker existed (2020)."""
        return self.abi_version is None and bool(self.callbacks)

    @property
    def is_proxy_wasm(self) -> bool:
        return self.valid and (self.abi_version is not None or bool(self.callbacks))

    @property
    def fits_configmap(self) -> bool:
        return self.size <= CONFIGMAP_LIMIT

    @property
    def fits_client_side_apply(self) -> bool:
        if self.apply_size is not None:
            return self.apply_size <= ANNOTATION_LIMIT
        return self.size <= CLIENT_SIDE_APPLY_LIMIT

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "sha256": self.sha256,
            "is_wasm": self.is_wasm,
            "valid": self.valid,
            "error": self.error,
            "abi_version": self.abi_version,
            "legacy": self.legacy,
            "callbacks": list(self.callbacks),
            "import_modules": list(self.import_modules),
            "start": self.start,
            "exported_functions": list(self.exported_functions),
            "is_proxy_wasm": self.is_proxy_wasm,
            "fits_configmap": self.fits_configmap,
            "fits_client_side_apply": self.fits_client_side_apply,
            "imports": list(self.imports),
            "code_sha256": self.code_sha256,
            "client_side_apply": None if self.apply_size is None else {
                "annotations_bytes": self.apply_size, "limit": ANNOTATION_LIMIT,
                "configmap_of_filter": self.apply_filter, "namespace": APPLY_NAMESPACE},
        }


def code_sha256(data: bytes) -> str | None:
    """sha256 over every section but custom ones (names, build ids, debug info): equal for two
    modules whose code and data are identical. None when the bytes are not a module we can walk."""
    if data[:4] != WASM_MAGIC:
        return None
    digest = hashlib.sha256(data[:8])
    r = _Reader(data, 8)
    try:
        while r.pos < r.end:
            start = r.pos
            section_id = r.byte()
            size = r.leb()
            if r.pos + size > r.end:
                return None
            if section_id != 0:
                digest.update(data[start:r.pos + size])
            r.pos += size
    except _UnknownEncoding:
        return None
    return digest.hexdigest()


def _wasmtime() -> Any:
    # Imported on first use: its ctypes bindings take ~50 ms to load, which a render pays in a
    # helper process (spec.py inspects binaries there) rather than on its own critical path.
    import wasmtime

    return wasmtime


@functools.lru_cache(maxsize=1)
def _engine() -> wasmtime.Engine:
    # Created on first use and shared: an Engine sets up a compiler and its caches, which costs
    # far more than inspecting a small module. No parallel compilation: validating a module would
    # otherwise start a pool of threads, and a multi-threaded process cannot safely fork (parallel.py).
    wt = _wasmtime()
    config = wt.Config()
    config.parallel_compilation = False
    engine: wasmtime.Engine = wt.Engine(config)
    return engine


class _UnknownEncoding(Exception):
    """The section reader met something it does not decode; compile instead."""


class _Reader:
    """Reads the binary format's primitives from a module wasmtime already validated."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _UnknownEncoding("unexpected end of section")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def leb(self) -> int:
        # Unsigned LEB128; also used to skip signed ones (heap types), whose value we ignore.
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result
            if shift > 70:
                raise _UnknownEncoding("LEB128 number too long")

    def name(self) -> str:
        n = self.leb()
        if self.pos + n > self.end:
            raise _UnknownEncoding("name runs past its section")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8")

    def skip_ref_or_val_type(self) -> None:
        # 0x63/0x64 are (ref null ht)/(ref ht), followed by a heap type; anything else is one byte.
        if self.byte() in (0x63, 0x64):
            self.leb()

    def skip_limits(self) -> None:
        flags = self.byte()
        if flags & ~0x0F:
            raise _UnknownEncoding(f"limits flags 0x{flags:02x}")
        self.leb()  # minimum (u32 or, for 64-bit memories/tables, u64)
        if flags & 0x01:
            self.leb()  # maximum
        if flags & 0x08:
            self.leb()  # custom page size (log2)


def _read_sections(data: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """(module, name) of every import and (name, kind) of every export."""
    imports: list[tuple[str, str]] = []
    exports: list[tuple[str, int]] = []
    r = _Reader(data, 8)
    while r.pos < r.end:
        section_id = r.byte()
        size = r.leb()
        body = _Reader(data, r.pos, r.pos + size)
        r.pos += size
        if section_id == 2:
            for _ in range(body.leb()):
                module, field = body.name(), body.name()
                kind = body.byte()
                if kind == 0x00:  # function: type index
                    body.leb()
                elif kind == 0x01:  # table: element type, limits
                    body.skip_ref_or_val_type()
                    body.skip_limits()
                elif kind == 0x02:  # memory: limits
                    body.skip_limits()
                elif kind == 0x03:  # global: value type, mutability
                    body.skip_ref_or_val_type()
                    body.byte()
                elif kind == 0x04:  # tag: attribute, type index
                    body.byte()
                    body.leb()
                else:
                    raise _UnknownEncoding(f"import kind 0x{kind:02x}")
                imports.append((module, field))
        elif section_id == 7:
            for _ in range(body.leb()):
                field = body.name()
                kind = body.byte()
                body.leb()
                exports.append((field, kind))
    return imports, exports


def _compiled_sections(module: wasmtime.Module) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    imports = [(i.module, i.name or "") for i in module.imports]
    func_type = _wasmtime().FuncType
    exports = [(e.name, _EXPORT_KIND_FUNC if isinstance(e.type, func_type) else -1) for e in module.exports]
    return imports, exports


def _one_line(error: Exception) -> str:
    # wasmtime's messages span lines ("failed to parse ...\n\nCaused by:\n    ..."); a report
    # line and a JSON field read better with them joined.
    return "; ".join(part.strip() for part in str(error).splitlines() if part.strip() and part.strip() != "Caused by:")


_WAT_START = re.compile(rb"\A(?:\s|;;[^\n]*\n|\(;.*?;\))*\((?:module|component)\b", re.DOTALL)


def _not_wasm_error(data: bytes) -> str:
    if _WAT_START.match(data[:4096]):
        return "not a WebAssembly binary: this is WebAssembly text (WAT); compile it with wat2wasm first"
    if not data:
        return "not a WebAssembly binary: the file is empty"
    return "not a WebAssembly binary: missing the \\0asm magic number"


def inspect_wasm(data: bytes, *, compile: bool = False, filter_name: str | None = None) -> WasmReport:
    """Inspect one module. compile=True also compiles it with Cranelift (slower, see above);
    filter_name also measures the client-side-apply annotations of its ConfigMap (apply_size)."""
    size = len(data)
    digest = hashlib.sha256(data).hexdigest()

    def report(
        *,
        is_wasm: bool,
        error: str | None,
        imports: Sequence[tuple[str, str]] = (),
        exports: Sequence[tuple[str, int]] = (),
    ) -> WasmReport:
        functions = sorted({name for name, kind in exports if kind == _EXPORT_KIND_FUNC})
        abi = [ABI_EXPORTS[n] for n in functions if n in ABI_EXPORTS]
        return WasmReport(
            size=size,
            sha256=digest,
            is_wasm=is_wasm,
            valid=error is None,
            error=error,
            # Should a module mark several versions, the newest is what a current host picks.
            abi_version=max(abi, key=lambda v: tuple(int(p) for p in v.split("."))) if abi else None,
            callbacks=tuple(n for n in functions if n.startswith(CALLBACK_PREFIX)),
            import_modules=tuple(sorted({module for module, _ in imports})),
            start=next((n for n in START_EXPORTS if n in functions), None),
            exported_functions=tuple(functions),
            imports=tuple(sorted({f"{module}.{name}" for module, name in imports})),
            code_sha256=code_sha256(data) if filter_name is not None else None,
            apply_size=client_side_apply_size(data, filter_name) if filter_name is not None else None,
            apply_filter=filter_name or "",
        )

    # Checked before wasmtime sees the bytes: wt.Module accepts WAT text and would
    # happily report a text file as a valid module.
    if data[:4] != WASM_MAGIC:
        return report(is_wasm=False, error=_not_wasm_error(data))

    wt = _wasmtime()
    engine = _engine()
    if compile:
        try:
            module = wt.Module(engine, data)
        except wt.WasmtimeError as e:
            return report(is_wasm=True, error=_one_line(e))
        imports, exports = _compiled_sections(module)
        return report(is_wasm=True, error=None, imports=imports, exports=exports)

    try:
        wt.Module.validate(engine, data)
    except wt.WasmtimeError as e:
        return report(is_wasm=True, error=_one_line(e))
    try:
        imports, exports = _read_sections(data)
    except (_UnknownEncoding, UnicodeDecodeError):
        try:
            imports, exports = _compiled_sections(wt.Module(engine, data))
        except wt.WasmtimeError as e:
            return report(is_wasm=True, error=_one_line(e))
    return report(is_wasm=True, error=None, imports=imports, exports=exports)
