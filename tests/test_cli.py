"""The command line as users meet it: exit codes, streams, formats, the repository's own spec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, Repo, proxy_wasm_module


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "renderer", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, check=False)


def test_python_dash_m_and_the_console_script_are_the_same_program() -> None:
    a = run("--help")
    script = Path(sys.executable).parent / "wasm-gitops"
    b = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    for command in ("render", "validate", "check", "diff", "inspect", "verify", "build"):
        assert command in a.stdout


def test_this_repository_is_rendered_and_up_to_date() -> None:
    result = run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "output is up to date" in result.stdout


def test_the_example_filter_passes_its_declared_tests() -> None:
    result = run("verify", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report, "verify ran no test"
    text = json.dumps(report)
    assert "adds the demo header" in text and "resp-header-demo" in text


def test_verify_reports_a_failing_expectation(repo: Repo) -> None:
    example = (REPO / "filters/example-filter/example-filter.wasm").read_bytes()
    repo.write("filters/example-filter.wasm", example)
    spec = repo.spec.read_text().replace(
        "    rootId: my_root_id\n",
        "    rootId: my_root_id\n"
        "    tests:\n"
        "      - name: wrong expectation\n"
        "        response: {headers: {\":status\": \"200\"}}\n"
        "        expect: {responseHeaders: {resp-header-demo: something else}}\n", 1)
    repo.write("filters.yaml", spec)
    result = run("verify", "-f", str(repo.spec))
    assert result.returncode == 1
    assert "FAIL example-filter/wrong expectation" in result.stdout
    assert "added by our filter" in result.stdout  # what was seen, against what was expected


def test_validate_formats(repo: Repo) -> None:
    repo.write("filters.yaml", repo.spec.read_text().replace("rootId:", "rootID:"))
    text = run("validate", "-f", str(repo.spec))
    assert text.returncode == 2 and text.stdout == ""
    assert text.stderr == "filters.yaml:7:5: unknown key 'rootID' in filters[0]; did you mean 'rootId'?\n"
    as_json = run("validate", "-f", str(repo.spec), "--format", "json")
    assert as_json.returncode == 2
    problem = json.loads(as_json.stdout)["problems"][0]
    assert (problem["line"], problem["column"], problem["path"]) == (7, 5, "$.filters[0].rootID")
    github = run("validate", "-f", str(repo.spec), "--format", "github")
    assert github.stdout.startswith("::error file=filters.yaml,line=7,col=5::unknown key 'rootID'")


def test_warnings_do_not_fail_validate(repo: Repo) -> None:
    repo.write("filters/example-filter.wasm", proxy_wasm_module("big", pad=200_000))
    result = run("validate", "-f", str(repo.spec))
    assert result.returncode == 0
    assert "warning: 'filters/example-filter.wasm' is 200,2" in result.stderr
    assert "server-side apply" in result.stderr


def test_a_big_binary_is_marked_for_server_side_apply(repo: Repo) -> None:
    repo.write("filters/example-filter.wasm", proxy_wasm_module("big", pad=200_000))
    assert repo.cli("render").exit_code == 0
    cm = repo.load("base/default/example-filter.configmap.yaml")
    assert cm["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "PruneLast=true,ServerSideApply=true"
    small = repo.load("base/default/other-filter.configmap.yaml")
    assert small["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "PruneLast=true"


def test_missing_spec_is_one_line(tmp_path: Path) -> None:
    result = run("render", "-f", str(tmp_path / "filters.yaml"))
    assert result.returncode == 2
    assert result.stderr == f"wasm-gitops: {tmp_path / 'filters.yaml'}: no such file; create one with 'wasm-gitops init'\n"


def test_inspect_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "f.wasm"
    good.write_bytes(proxy_wasm_module("x"))
    text = tmp_path / "t.wasm"
    text.write_text("(module)")
    assert run("inspect", str(good)).returncode == 0
    assert run("inspect", str(text)).returncode == 2
    report = json.loads(run("inspect", str(good), "--format", "json").stdout)
    assert report["abi_version"] == "0.2.1"


def test_settings_the_module_cannot_honour_are_reported(repo: Repo) -> None:
    import wasmtime

    legacy = bytes(wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) i32.const 0) '
        '(func (export "proxy_on_context_create") (param i32 i32)))'))
    repo.write("filters/other-filter.wasm", legacy)
    warnings = [
        "filters.yaml:9:11: warning: the module exports no proxy_abi_version_* marker (a pre-2020 build); "
        "current Envoy refuses to load it: rebuild with a current SDK",
        "filters.yaml:10:13: warning: the module exports no proxy_on_configure, so it never reads its "
        "configuration; remove config or check the build",
    ]
    result = run("validate", "--no-envoy", "-f", str(repo.spec))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["wasm-gitops: Envoy step skipped (--no-envoy)", *warnings]
    # Envoy proves the first warning right, and the warnings still come with its refusal.
    result = run("validate", "-f", str(repo.spec))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "filters.yaml:9:11: Envoy 1.40.0 cannot load the module of filter 'other-filter': Wasm VM failed Missing "
        "or unknown Proxy-Wasm ABI version; Wasm VM failed Failed to load Wasm code; fix the module (or rebuild "
        "it with a current proxy-wasm SDK)", *warnings]
