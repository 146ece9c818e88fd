"""Wasm modules the Envoy tests load, built from the sources in this repository once per test session.

Every module is built into the session's pytest temporary directory, under the sha256 of what it is
built from (the source bytes and the compiler command), so nothing built lands in the repository and a
module asked for by several tests is compiled once. A missing toolchain skips the tests that need it
and says what to install; a source that does not compile fails them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FILTERS = TESTS / "filters"
MODULES = TESTS / "modules"

# Debian's rustc: the rustup toolchain that may come first on PATH has no wasm32 standard library.
RUSTC = Path("/usr/bin/rustc")
RUST_TARGET = "wasm32-unknown-unknown"
RUST_APT = "apt-get install -y rustc libstd-rust-dev-wasm32"
BUILD_TIMEOUT = 600  # seconds: zig builds libc++ for wasm32-wasi on its first use on a machine


@dataclass(frozen=True)
class Source:
    kind: str  # "cpp", "rust", "c-make" or "wat"
    path: Path  # the source file (for c-make: the directory holding the Makefile)


SOURCES: dict[str, Source] = {
    "cpp_probe": Source("cpp", FILTERS / "cpp_probe" / "probe.cc"),
    "rust_probe": Source("rust", FILTERS / "rust_probe" / "probe.rs"),
    "example_filter": Source("c-make", REPO / "filters" / "example-filter"),
    **{p.stem: Source("wat", p) for p in sorted(MODULES.glob("*.wat"))},
}


def _cpp_command(source: Path, out: Path) -> list[str]:
    # A WASI reactor (`_initialize` runs the global constructors), as the C++ SDK's modules are.
    return [sys.executable, "-m", "ziglang", "c++", "--target=wasm32-wasi", "-mexec-model=reactor", "-std=c++17",
            "-Os", "-fno-exceptions", "-Wall", "-Wextra", "-Werror", "-g0", "-s", "-o", os.fspath(out),
            os.fspath(source)]


def _rust_command(source: Path, out: Path) -> list[str]:
    return [os.fspath(RUSTC), "--edition", "2021", "--target", RUST_TARGET, "--crate-type", "cdylib",
            "-C", "opt-level=s", "-C", "panic=abort", "-C", "strip=symbols", "-o", os.fspath(out),
            os.fspath(source)]


def _missing_toolchain(kind: str) -> str | None:
    """Why this kind of source cannot be built here, or None."""
    if kind in ("cpp", "c-make") and importlib.util.find_spec("ziglang") is None:
        return "the ziglang package is not installed in this interpreter (make .venv/.installed installs it)"
    if kind == "c-make" and shutil.which("make") is None:
        return "make is not installed (apt-get install -y make)"
    if kind == "rust":
        if not RUSTC.is_file():
            return f"{RUSTC} is missing ({RUST_APT})"
        done = subprocess.run([os.fspath(RUSTC), "--print", "sysroot"], capture_output=True, text=True,
                              check=False, timeout=60)
        sysroot = Path(done.stdout.strip())
        if not (sysroot / "lib" / "rustlib" / RUST_TARGET / "lib").is_dir():
            return f"{RUSTC} has no {RUST_TARGET} standard library (apt-get install -y libstd-rust-dev-wasm32)"
    return None


def _run(argv: list[str], cwd: Path | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        pytest.fail(f"building a test module failed: {' '.join(argv)}\n{done.stdout}{done.stderr}", pytrace=False)


class WasmBuilder:
    """Builds each named source at most once into `root`; `path(name)` is the module's file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def path(self, name: str) -> Path:
        if name in self._built:
            return self._built[name]
        source = SOURCES[name]
        why = _missing_toolchain(source.kind)
        if why is not None:
            pytest.skip(f"cannot build {name} from {source.path.relative_to(REPO)}: {why}")
        out = self._build(name, source)
        self._built[name] = out
        return out

    def bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def _key(self, source: Source, command: list[str]) -> str:
        h = hashlib.sha256()
        files = sorted(source.path.iterdir()) if source.path.is_dir() else [source.path]
        for f in files:
            if f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        h.update("\0".join(command).encode())
        return h.hexdigest()[:16]

    def _build(self, name: str, source: Source) -> Path:
        placeholder = self.root / "placeholder.wasm"
        command = {"cpp": lambda: _cpp_command(source.path, placeholder),
                   "rust": lambda: _rust_command(source.path, placeholder),
                   "c-make": lambda: ["make", "WASM_CC=" + f"{sys.executable} -m ziglang cc"],
                   "wat": lambda: ["wat2wasm"]}[source.kind]()
        out = self.root / f"{name}-{self._key(source, command)}.wasm"
        if out.is_file():
            return out
        if source.kind == "wat":
            out.write_bytes(bytes(wasmtime.wat2wasm(source.path.read_text(encoding="utf-8"))))
        elif source.kind == "c-make":
            # The Makefile writes next to its sources: build in a copy, never in the checkout.
            work = self.root / f"{name}-src"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(source.path, work, ignore=shutil.ignore_patterns("*.wasm"))
            _run(["make", "-C", os.fspath(work), command[1]])
            (work / f"{source.path.name}.wasm").replace(out)
        else:
            command = [os.fspath(out) if part == os.fspath(placeholder) else part for part in command]
            _run(command, cwd=self.root)
        return out


def wasm_builder(tmp_path_factory: pytest.TempPathFactory) -> WasmBuilder:
    return WasmBuilder(tmp_path_factory.mktemp("wasm-modules"))


BuildWasm = Callable[[str], Path]
