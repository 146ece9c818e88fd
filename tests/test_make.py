"""The Makefile's build targets, as a user runs them: `make wasm` with a recording `docker` stand-in
(there is no Docker engine here), the command lines generated from filters.yaml, and which targets
install what (rendering needs the runtime dependencies only)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from conftest import REPO

RECORDER = """#!/bin/sh
printf '%s\\n' "$@" >> "$DOCKER_ARGS_LOG"
printf -- '--\\n' >> "$DOCKER_ARGS_LOG"
"""


def make(target: str, path: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    env.pop("WASM_SDK_IMAGE", None)  # only the test that sets it may have it
    env.update(extra_env)
    # STAMP= RUNTIME_STAMP= : the venv running these tests is the one make would build; do not reinstall it.
    return subprocess.run(["make", "-s", target, "STAMP=", "RUNTIME_STAMP=", f"BIN={Path(sys.executable).parent}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def planned_installs(target: str, venv: Path) -> list[str]:
    """The pip installs `make TARGET` would run for a fresh clone (make -n: nothing is run)."""
    result = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=True)
    return [line.split(" -c constraints.txt ", 1)[1] for line in result.stdout.splitlines()
            if " -m pip install " in line and " -c constraints.txt " in line]


def test_rendering_installs_the_runtime_dependencies_only(tmp_path: Path) -> None:
    for target in ("render", "check", "validate", "diff", "verify", "wasm"):
        assert planned_installs(target, tmp_path / ".venv") == ["-e ."], target


def test_tests_lint_bench_and_the_local_build_add_the_test_extras(tmp_path: Path) -> None:
    for target in ("test", "lint", "bench", "wasm-local"):
        assert planned_installs(target, tmp_path / ".venv")[:2] == ["-e .", "-e '.[test]'"], target


def fake_docker(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text(RECORDER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_make_wasm_runs_the_documented_docker_build_per_filter(tmp_path: Path) -> None:
    log = tmp_path / "docker-args"
    bindir = fake_docker(tmp_path)
    result = make("wasm", f"{bindir}:{os.environ['PATH']}", {"DOCKER_ARGS_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    context = REPO / "filters" / "example-filter"
    assert log.read_text().split("\n--\n")[0].splitlines() == [
        "run", "--rm", "-v", f"{context}:/work", "-w", "/work",
        "registry.cn-hangzhou.aliyuncs.com/acs/wasmsdk:v0.1", "/build_wasm.sh"]


def test_make_wasm_honours_wasm_sdk_image(tmp_path: Path) -> None:
    log = tmp_path / "docker-args"
    bindir = fake_docker(tmp_path)
    result = make("wasm", f"{bindir}:{os.environ['PATH']}",
                  {"DOCKER_ARGS_LOG": str(log), "WASM_SDK_IMAGE": "mirror.example.com/wasmsdk:v0.2"})
    assert result.returncode == 0, result.stderr
    assert "mirror.example.com/wasmsdk:v0.2" in log.read_text().splitlines()


def test_make_wasm_without_docker_says_how_to_build_locally(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("make", "sh", "env"):
        found = shutil.which(tool)
        assert found
        (bindir / tool).symlink_to(found)
    result = make("wasm", str(bindir), {})
    assert result.returncode != 0
    assert "wasm-gitops: docker not found; build locally instead with 'make wasm-local'" in result.stderr
