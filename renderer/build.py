"""Build commands for filters that declare a build section: in the SDK Docker image, or locally.

A problem raises: BuildFailed (exit 1) when a build ran and failed, UsageError (exit 2) when a tool
is missing. Progress goes to the caller's `say`, so the CLI decides where lines go and this module prints
nothing.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

from .errors import UsageError, WasmGitopsError
from .model import DEFAULTS, BuildTarget

# Replaces the default proxy-wasm C++ SDK image (model.DEFAULTS.build_image) for one run; the image's
# /build_wasm.sh sources emsdk and runs `make` in /work.
IMAGE_ENV = "WASM_SDK_IMAGE"
# The version the committed example-filter.wasm was built with: a reproducible build is only
# byte-identical for one compiler version, so it is pinned here and in the constraints.
ZIGLANG_VERSION = "0.17.1"

Say = Callable[[str], None]


class BuildFailed(WasmGitopsError):
    """A build ran and failed, or produced no module: a finding about the filter's sources, exit 1."""

    exit_code = 1


def _silent(_: str) -> None:
    pass


def build_image(target: BuildTarget, env_image: str | None) -> str:
    """The image a target builds in: its own, else WASM_SDK_IMAGE, else the spec's default (model.DEFAULTS).

    An image written into filters.yaml is a reviewed statement about that one filter's
    toolchain (a Rust filter cannot build in the C++ SDK), while WASM_SDK_IMAGE is set for a
    whole run, typically to point at a mirror or a newer SDK. Letting the variable win would
    silently build every filter with one toolchain, so it only replaces the built-in default:
    the specific setting beats the general one, as with most configuration.
    """
    return target.image or env_image or DEFAULTS.build_image


def docker_command(target: BuildTarget, env_image: str | None) -> list[str]:
    return [
        "docker",
        "run",
        "--rm",
        "-v",
        f"{target.context}:/work",
        "-w",
        "/work",
        build_image(target, env_image),
        "/build_wasm.sh",
    ]


def _check_output(target: BuildTarget) -> None:
    if not target.wasm.is_file():
        raise BuildFailed(f"{target.name}: the build succeeded but did not produce {target.wasm}")


def run_docker_builds(targets: Iterable[BuildTarget], env: Mapping[str, str], say: Say = _silent) -> None:
    """Build each target in order in its SDK image; stop at the first failure."""
    # Looked up in the given environment, not ours: that is the PATH the build runs with.
    docker = shutil.which("docker", path=env.get("PATH", ""))
    if docker is None:
        raise UsageError("docker not found; build locally instead with 'make wasm-local'")
    env_image = env.get(IMAGE_ENV) or None
    for target in targets:
        command = docker_command(target, env_image)
        say(f"building {target.name} in {build_image(target, env_image)}")
        result = subprocess.run(command, executable=docker, env=dict(env), check=False)
        if result.returncode != 0:
            # 125 is docker's own failure (no daemon, image pull), not the build's.
            hint = ""
            if result.returncode == 125:
                hint = "; without a Docker engine, build locally with 'make wasm-local'"
            raise BuildFailed(f"{target.name}: docker exited with status {result.returncode}{hint}")
        _check_output(target)


def local_compiler() -> list[str]:
    """zig's bundled clang from the ziglang PyPI package, run by this very interpreter.

    Chosen over a system clang because `pip install ziglang==X` gives the same compiler on
    every machine, wasm32 linker included, while a distribution's clang needs lld installed
    separately and differs in version, and so in output bytes, from one release to the next.
    """
    return [sys.executable, "-m", "ziglang", "cc"]


def local_build_command(target: BuildTarget, compiler: Sequence[str]) -> list[str]:
    # One make argument: make splits WASM_CC on spaces when the recipe's shell runs it, and
    # shlex quoting keeps a compiler path with spaces in one word there.
    return ["make", "-C", str(target.context), f"WASM_CC={shlex.join(compiler)}"]


def run_local_builds(targets: Iterable[BuildTarget], compiler: Sequence[str], say: Say = _silent) -> None:
    """Build each target in order with `compiler`; stop at the first failure."""
    if shutil.which("make") is None:
        raise UsageError("make not found; install it (Debian: apt-get install make)")
    uses_our_ziglang = list(compiler[:3]) == [sys.executable, "-m", "ziglang"]
    if uses_our_ziglang and importlib.util.find_spec("ziglang") is None:
        raise UsageError(f"the ziglang package is missing; pip install ziglang=={ZIGLANG_VERSION}")
    for target in targets:
        say(f"building {target.name} locally")
        result = subprocess.run(local_build_command(target, compiler), check=False)
        if result.returncode != 0:
            raise BuildFailed(f"{target.name}: make exited with status {result.returncode}")
        _check_output(target)
