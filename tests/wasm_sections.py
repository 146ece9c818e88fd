"""Modules of chosen sizes: a valid module plus a custom section (id 0), which a runtime skips.

Shared by the tests and the benchmark's synthetic meshes (bench/meshgen.py); the renderer itself only
reads modules, it never grows them.
"""

from __future__ import annotations

from collections.abc import Callable


def uleb128(n: int) -> bytes:
    """Unsigned LEB128, the binary format's integer encoding (the inverse of renderer.wasm's reader)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def with_custom_section(module: bytes, name: str, payload: bytes) -> bytes:
    """`module` plus a custom section (id 0): still the same module to a runtime, just bigger.
    The tests and the benchmark (bench/meshgen.py) make modules of chosen sizes with it."""
    encoded = name.encode("utf-8")
    content = uleb128(len(encoded)) + encoded + payload
    return module + b"\x00" + uleb128(len(content)) + content


def padded_to(module: bytes, total: int, name: str = "pad", fill: Callable[[int], bytes] = bytes) -> bytes:
    """`module` plus one custom section, so that the result is exactly `total` bytes long; `fill(n)`
    gives the section's n bytes of payload (zeros by default)."""
    encoded = name.encode("utf-8")
    head = uleb128(len(encoded)) + encoded
    # The section's length prefix is part of the total, and its width depends on the length.
    for width in range(1, 6):
        content_len = total - len(module) - 1 - width
        if content_len >= len(head) and len(uleb128(content_len)) == width:
            return module + b"\x00" + uleb128(content_len) + head + fill(content_len - len(head))
    raise ValueError(f"cannot pad {len(module)} bytes to exactly {total}")
