"""The command line as users meet it: exit codes, streams, formats, the repository's own spec."""

from __future__ import annotations

import html
import json
import os
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


def console(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, the way a user or CI runs it."""
    script = Path(sys.executable).parent / "wasm-gitops"
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False,
                          env={**os.environ, **(env or {})})


def test_a_crash_exits_3_with_one_line_and_the_traceback_in_a_log(repo: Repo, tmp_path: Path) -> None:
    assert repo.cli("render").exit_code == 0
    cache = tmp_path / "cache"
    # A bug nobody anticipated, raised deep inside a real check run through the console entry point.
    program = ("import sys, renderer.output as o\n"
               "def broken(*a, **k):\n    raise ZeroDivisionError('division by zero in compare')\n"
               "o.compare = broken\nimport renderer.core as c\nc.compare = broken\n"
               "from renderer.cli import entry\nsys.argv = ['wasm-gitops', 'check', '-f', sys.argv[1]]\nentry()\n")
    crashed = subprocess.run([sys.executable, "-c", program, str(repo.spec)], capture_output=True, text=True,
                             timeout=300, check=False, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert crashed.returncode == 3, crashed.stderr
    assert crashed.stdout == ""
    log = cache / "wasm-gitops" / "wasm-gitops.log"
    assert crashed.stderr == ("wasm-gitops: unexpected error (ZeroDivisionError: division by zero in compare); this "
                              f"is a bug in wasm-gitops, please report it; the traceback is in {log}\n")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert f"command: wasm-gitops check -f {repo.spec}" in text


def test_a_malformed_lock_wait_is_a_usage_error_not_a_traceback(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    for value in ("soon", "-1", "nan", "inf"):
        result = console("check", "-f", str(repo.spec), env={"WASM_GITOPS_LOCK_WAIT": value})
        assert result.returncode == 2, (value, result.stderr)
        assert result.stderr == (f"wasm-gitops: WASM_GITOPS_LOCK_WAIT={value!r}: not a number of seconds; set it "
                                 "to e.g. 60, or unset it\n")
    assert console("check", "-f", str(repo.spec), env={"WASM_GITOPS_LOCK_WAIT": "2.5"}).returncode == 0


def test_every_format_reports_a_broken_spec_in_that_format(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    repo.write("filters.yaml", repo.spec.read_text().replace("rootId:", "rootID:"))
    message = "unknown key 'rootID' in filters[0]; did you mean 'rootId'?"
    for command in ("validate", "check", "diff"):
        as_json = repo.cli(command, "--format", "json")
        assert as_json.exit_code == 2, command
        doc = json.loads(as_json.stdout)
        assert (doc["schemaVersion"], doc["valid"]) == (1, False)
        assert [(p["file"], p["line"], p["column"], p["message"]) for p in doc["problems"]] == [
            ("filters.yaml", 7, 5, message)], command
        github = repo.cli(command, "--format", "github")
        assert (github.exit_code, github.stdout) == (2, f"::error file=filters.yaml,line=7,col=5::{message}\n"), command
        text = repo.cli(command)
        assert (text.exit_code, text.stdout, text.stderr) == (2, "", f"filters.yaml:7:5: {message}\n"), command
    markdown = repo.cli("diff", "--format", "markdown")
    assert markdown.exit_code == 2
    assert markdown.stdout.startswith("<!-- wasm-gitops diff part 1 -->\n## wasm-gitops diff\n\n**The spec is invalid**")
    assert f"- <code>filters.yaml:7:5: {message}</code>\n" in html.unescape(markdown.stdout)


def test_warnings_come_in_the_format_too(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    repo.write("filters/example-filter.wasm", proxy_wasm_module("big", pad=200_000))
    assert repo.cli("render").exit_code == 0
    doc = json.loads(repo.cli("check", "--format", "json").stdout)
    assert doc["clean"] is True and doc["valid"] is True
    assert [p["severity"] for p in doc["problems"]] == ["warning", "warning"]
    github = repo.cli("check", "--format", "github").stdout.splitlines()
    assert github[0].startswith("::warning file=filters.yaml,line=6,col=11::'filters/example-filter.wasm' is 200,")


def test_paths_are_relative_to_the_current_directory_and_annotations_to_the_repository(repo: Repo) -> None:
    # The GitOps repository keeps its spec in mesh/; commands run from the repository root.
    mesh = repo.root / "mesh"
    mesh.mkdir()
    for name in ("filters", "apps", "filters.yaml"):
        (repo.root / name).rename(mesh / name)
    (repo.root / ".git").mkdir()  # what makes repo.root the repository for annotations
    assert run("render", "-f", "mesh/filters.yaml", cwd=repo.root).returncode == 0
    (mesh / "filters.yaml").write_text((mesh / "filters.yaml").read_text().replace("rootId:", "rootID:"))
    text = run("check", "-f", "mesh/filters.yaml", cwd=repo.root)
    assert text.stderr == "mesh/filters.yaml:7:5: unknown key 'rootID' in filters[0]; did you mean 'rootId'?\n"
    github = run("check", "-f", "mesh/filters.yaml", "--format", "github", cwd=repo.root)
    assert github.stdout.startswith("::error file=mesh/filters.yaml,line=7,col=5::")
    # From inside mesh/, people read paths from there; GitHub still needs them from the root.
    inside = run("validate", "--format", "github", cwd=mesh)
    assert inside.stdout.startswith("::error file=mesh/filters.yaml,line=7,col=5::")
    assert run("validate", cwd=mesh).stderr.startswith("filters.yaml:7:5: ")

    (mesh / "filters.yaml").write_text((mesh / "filters.yaml").read_text().replace("rootID:", "rootId:"))
    (mesh / "filters/example-filter.wasm").write_bytes(proxy_wasm_module("moved-v2"))
    drift = run("check", "-f", "mesh/filters.yaml", cwd=repo.root)
    assert drift.returncode == 1
    assert "changed  mesh/base/default/example-filter.configmap.yaml" in drift.stdout.splitlines()
    annotated = run("check", "-f", "mesh/filters.yaml", "--format", "github", cwd=repo.root).stdout
    assert "::error file=mesh/base/default/example-filter.configmap.yaml::changed: " in annotated
    diff = run("diff", "--format", "github", cwd=mesh).stdout
    assert "::notice file=mesh/overlays/details/deployment-patch.yaml," in diff
    assert "~ Deployment default/details-v1  (overlays/details/deployment-patch.yaml); pods roll" in run(
        "diff", cwd=mesh).stdout.splitlines()


def test_a_missing_default_spec_says_how_to_name_one(tmp_path: Path) -> None:
    result = run("check", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"wasm-gitops: filters.yaml: no such file in {tmp_path}; pass the spec with -f PATH (in "
                             ".pre-commit-config.yaml: args: [-f, path/to/filters.yaml]), or create one with "
                             "'wasm-gitops init'\n")


def test_every_json_output_carries_a_schema_version(repo: Repo, tmp_path: Path) -> None:
    assert repo.cli("render").exit_code == 0
    wasm = tmp_path / "f.wasm"
    wasm.write_bytes(proxy_wasm_module("x"))
    outputs = [repo.cli("validate", "--format", "json").stdout, repo.cli("check", "--format", "json").stdout,
               repo.cli("diff", "--format", "json").stdout, run("inspect", str(wasm), "--format", "json").stdout]
    assert [json.loads(o)["schemaVersion"] for o in outputs] == [1, 1, 1, 1]


def test_help_shows_examples_for_each_command() -> None:
    for command in ("render", "validate", "check", "diff", "init", "inspect", "verify", "build", "completion"):
        result = run(command, "--help")
        assert result.returncode == 0, command
        examples = result.stdout[result.stdout.index("Examples:"):].splitlines()[1:]
        assert examples and all(line.strip().startswith((f"wasm-gitops {command}", "eval "))
                                for line in examples if line.strip()), (command, examples)


def test_bash_completion_completes_commands_and_options() -> None:
    script = console("completion", "bash")
    assert script.returncode == 0 and "_WASM_GITOPS_COMPLETE" in script.stdout
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

    def complete(*words: str) -> list[str]:
        probe = (f"{script.stdout}\nCOMP_WORDS=(wasm-gitops {' '.join(words)}); COMP_CWORD={len(words)}; "
                 "_wasm_gitops_completion wasm-gitops; printf '%s\\n' \"${COMPREPLY[@]}\"")
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "PATH": path})
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("di") == ["diff"]
    assert "markdown" in complete("diff", "--format", "")
    for shell, mark in (("zsh", "compdef"), ("fish", "complete --no-files --command wasm-gitops")):
        other = console("completion", shell)
        assert other.returncode == 0 and mark in other.stdout, shell
    assert console("completion", "tcsh").returncode == 2


def test_inspect_measures_the_client_side_apply_annotation(tmp_path: Path) -> None:
    wasm = tmp_path / "big-filter.wasm"
    wasm.write_bytes(proxy_wasm_module("big", pad=150_000))
    doc = json.loads(run("inspect", str(wasm), "--format", "json").stdout)
    measured = doc["client_side_apply"]
    assert measured["configmap_of_filter"] == "big-filter" and measured["limit"] == 262_144
    assert 200_000 < measured["annotations_bytes"] < 262_144 and doc["fits_client_side_apply"] is True
    text = run("inspect", str(wasm)).stdout
    assert f"to {measured['annotations_bytes']:,} of 262,144 bytes" in text
