"""Hostile input and a hostile world: kills, concurrent renders, full disks, injection attempts."""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import INPUTS, REPO, Repo, make_repo, proxy_wasm_module

from renderer.yamlio import dump


def cli(repo: Repo, *args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "renderer", *args, "-f", str(repo.spec)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=REPO, timeout=120, check=False, **kw)  # type: ignore[call-overload]


def big_spec(repo: Repo, services: int, tag: str) -> None:
    """Many services, so a render writes hundreds of files; `tag` changes every binary."""
    repo.write("filters/example-filter.wasm", proxy_wasm_module(f"example-{tag}"))
    repo.write("filters/other-filter.wasm", proxy_wasm_module(f"other-{tag}"))
    lines = ["apiVersion: wasm-gitops/v1", "kind: FilterSet", 'istio: "1.22"', "filters:",
             f"  - {{name: example-filter, wasm: filters/example-filter.wasm, rootId: {tag}}}",
             f"  - {{name: other-filter, wasm: filters/other-filter.wasm, rootId: {tag}}}", "services:"]
    for i in range(services):
        if not (repo.root / f"apps/s{i}").exists():
            repo.app(f"s{i}", f"s{i}-v1", f"s{i}", namespace=f"ns{i % 5}")
        lines.append(f"  - {{name: s{i}, namespace: ns{i % 5}, deployment: s{i}-v1, resources: [apps/s{i}], "
                     f"filters: [example-filter, other-filter]}}")
    repo.write("filters.yaml", "\n".join(lines) + "\n")


@pytest.mark.parametrize("kill_at", ["stage:1", "stage:200", "commit:1", "apply:1", "apply:150", "apply:360"])
def test_sigkill_at_any_point_leaves_the_old_or_the_new_tree(repo: Repo, kill_at: str) -> None:
    big_spec(repo, 120, "old")
    assert cli(repo, "render").returncode == 0
    old = repo.outputs()
    big_spec(repo, 120, "new")
    killed = cli(repo, "render", env={"WASM_GITOPS_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL
    check = cli(repo, "check")
    if kill_at.startswith(("apply", "commit")):
        # Past the commit point: check says so, and the next render finishes the same tree.
        assert check.returncode == 1 and "interrupted" in check.stdout
    else:
        # Killed before the commit point: exactly the old tree (the staging area aside, which the
        # next render discards).
        assert not (repo.root / ".wasm-gitops.tmp/commit").exists()
        assert {k: v for k, v in repo.outputs().items() if not k.startswith(".wasm-gitops.tmp")} == old
    finish = cli(repo, "render")
    assert finish.returncode == 0, finish.stderr
    new = repo.outputs()
    assert cli(repo, "check").returncode == 0
    assert not (repo.root / ".wasm-gitops.tmp").exists()
    # And that tree is exactly what an uninterrupted render gives.
    fresh = Repo(repo.root.parent / "fresh")
    fresh.root.mkdir()
    for rel, data in repo.tree().items():
        if rel.startswith(INPUTS):
            fresh.write(rel, data)
    assert cli(fresh, "render").returncode == 0
    assert fresh.outputs() == new


def test_sigkill_at_random_moments(repo: Repo) -> None:
    big_spec(repo, 150, "a")
    assert cli(repo, "render").returncode == 0
    previous = repo.outputs()
    for n, delay in enumerate([0.1, 0.4, 0.7]):
        big_spec(repo, 150, f"t{n}")
        proc = subprocess.Popen([sys.executable, "-m", "renderer", "render", "-f", str(repo.spec)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        committed = (repo.root / ".wasm-gitops.tmp/commit/journal.json").exists()
        if not committed:  # killed before the commit point (or after the end): old tree or new tree
            now = {k: v for k, v in repo.outputs().items() if not k.startswith(".wasm-gitops.tmp")}
            finished = cli(repo, "check").returncode == 0
            assert now == previous or finished
        assert cli(repo, "render").returncode == 0
        assert cli(repo, "check").returncode == 0
        previous = repo.outputs()


def test_two_renders_do_not_interleave(repo: Repo) -> None:
    assert cli(repo, "render").returncode == 0
    fd = os.open(repo.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        repo.write("filters/example-filter.wasm", proxy_wasm_module("locked"))
        before = repo.outputs()
        blocked = cli(repo, "render", env={"WASM_GITOPS_LOCK_WAIT": "0.5"})
        assert blocked.returncode == 2
        assert "waiting for another wasm-gitops run" in blocked.stderr
        assert "another wasm-gitops run still holds it" in blocked.stderr
        assert repo.outputs() == before
    finally:
        os.close(fd)
    procs = [subprocess.Popen([sys.executable, "-m", "renderer", "render", "-f", str(repo.spec)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert cli(repo, "check").returncode == 0


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_write_failure_leaves_the_old_tree_intact(repo: Repo) -> None:
    assert cli(repo, "render").returncode == 0
    before = repo.outputs()
    repo.write("filters/example-filter.wasm", proxy_wasm_module("bigger", pad=20_000))
    # The output's writes are the subject: the Envoy step's own files under the same limit are a case of
    # tests/test_envoy_load.py.
    failed = cli(repo, "render", "--no-envoy", preexec_fn=_limit_file_size)
    assert failed.returncode == 2, failed.stderr
    assert "file size limit exceeded" in failed.stderr and "nothing was changed" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert repo.outputs() == before


@pytest.mark.parametrize("value", [
    "evil\nkind: Secret",
    "a: b",
    "'; rm -rf / #",
    '"quoted" and \'single\'',
    "{{ 7 * 7 }}",
    "---\napiVersion: v1\nkind: Secret",
    "!!python/object/apply:os.system ['id']",
    "tab\there",
    "ünïcødé ✓",
])
def test_string_values_cannot_add_keys_documents_or_code(repo: Repo, value: str) -> None:
    spec = yaml.safe_load(repo.spec.read_text())
    spec["filters"][0]["rootId"] = value
    spec["filters"][0]["vmId"] = value
    spec["filters"][1]["config"] = {"k": value, value: [value]}
    repo.write("filters.yaml", dump(spec))
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    for rel, data in repo.outputs().items():
        if not rel.endswith(".yaml"):
            continue
        docs = list(yaml.safe_load_all(data))
        assert len(docs) == 1, f"{rel} grew a document"
        assert "Secret" not in {d.get("kind") for d in docs if isinstance(d, dict)}
    ef = repo.load("overlays/productpage/example-filter.envoyfilter.yaml")
    cfg = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
    assert cfg["root_id"] == value and cfg["vm_config"]["vm_id"] == value
    assert set(cfg) == {"name", "root_id", "vm_config", "fail_open"}


def test_a_huge_spec_is_refused_cheaply(repo: Repo) -> None:
    repo.write("filters.yaml", "# " + "x" * (17 * 1024 * 1024) + "\n")
    result = cli(repo, "validate")
    assert result.returncode == 2
    assert result.stderr.startswith("filters.yaml:1:1: file is 17,825,795 bytes, more than the 16,777,216")


def test_deep_nesting_is_refused(repo: Repo) -> None:
    repo.write("filters.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")
    result = cli(repo, "validate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.fixture
def tiny_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real 256 KiB tmpfs: a full disk, not a simulated one. Needs root and mount(2)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); needs root with CAP_SYS_ADMIN")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_leaves_the_old_tree_intact(tiny_disk: Path) -> None:
    repo = make_repo(tiny_disk / "repo")
    assert cli(repo, "render").returncode == 0
    before = repo.outputs()
    # 90 KB of binary: its base64 ConfigMap cannot be staged next to the old tree in 256 KiB.
    repo.write("filters/example-filter.wasm", proxy_wasm_module("large", pad=90_000))
    failed = cli(repo, "render")
    assert failed.returncode == 2, failed.stderr
    assert "no space left on the device" in failed.stderr and "nothing was changed" in failed.stderr
    assert repo.outputs() == before
    assert not (repo.root / ".wasm-gitops.tmp").exists()


def test_a_read_only_directory_leaves_the_old_tree_intact(repo: Repo) -> None:
    """Root ignores permission bits; without CAP_DAC_OVERRIDE (setpriv) it meets them like anyone."""
    import shutil as sh

    setpriv = sh.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    assert cli(repo, "render").returncode == 0
    (repo.root / "overlays" / "details").chmod(0o555)  # a directory the render must change
    try:
        repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v2"))
        before = repo.outputs()
        failed = subprocess.run(
            [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search",
             sys.executable, "-m", "renderer", "render", "-f", str(repo.spec)],
            capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
        assert failed.returncode == 2, failed.stdout + failed.stderr
        assert "permission denied" in failed.stderr and "the tree is as it was" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert repo.outputs() == before
    finally:
        (repo.root / "overlays" / "details").chmod(0o755)


def test_the_longest_names_still_make_valid_object_names(repo: Repo) -> None:
    """Names are DNS-1123 labels (<= 63); every generated name stays within Kubernetes' limits:
    <service>-<filter> <= 127 of 253, wasm-<filter>-<hash> <= 79, label values <= 63."""
    f63 = "f" * 62 + "1"
    s63 = "s" * 62 + "2"
    repo.app(s63, "d" * 253, "longapp")
    spec = {"apiVersion": "wasm-gitops/v1", "kind": "FilterSet", "istio": "1.22",
            "filters": [{"name": f63, "wasm": "filters/example-filter.wasm"}],
            "services": [{"name": s63, "deployment": "d" * 253, "resources": [f"apps/{s63}"], "filters": [f63]}]}
    repo.write("filters.yaml", dump(spec))
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    from conftest import kustomize

    objs = kustomize(repo.root)
    for obj in objs:
        meta = obj["metadata"]
        assert len(meta["name"]) <= 253
        for value in (meta.get("labels") or {}).values():
            assert len(value) <= 63
    ef = next(o for o in objs if o["kind"] == "EnvoyFilter")
    assert ef["metadata"]["name"] == f"{s63}-{f63}"
