"""Hostile input and a hostile world: kills, concurrent renders, full disks, injection attempts."""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import INPUTS, REPO, Repo, kustomize, make_repo, proxy_wasm_module
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

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


# ------------------------------------------------------------------ validate and render agree

# Odd but legal text: spaces, quotes, YAML indicators, non-ASCII, separators (U+2028 is category Zl).
ODD = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(" #:&*!%@`'\"{}[],|>-?"),
              min_size=1, max_size=14)
# A directory or file name: anything but "/" and NUL, and not "." or "..".
NAME = ODD.map(lambda s: s.replace("/", "_")).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)
K8S_NAME = st.from_regex(r"[a-z]([a-z0-9-]{0,60}[a-z0-9])?", fullmatch=True)
# Mostly near-valid label syntax (lengths around the 63-character limit), sometimes anything: odd
# labels are refused by validate, and a spec refused proves nothing about render.
_KEY = st.from_regex(r"([a-z0-9]([-a-z0-9.]{0,20}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,70}[A-Za-z0-9])?",
                     fullmatch=True)
_VALUE = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,70}[A-Za-z0-9])?)?", fullmatch=True)
LABEL_KEY = st.one_of(_KEY, _KEY, _KEY, ODD)
LABEL_VALUE = st.one_of(_VALUE, _VALUE, _VALUE, ODD)


@st.composite
def odd_repos(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A spec valid for the schema, and the files it names, with odd strings wherever a string goes."""
    files: dict[str, bytes] = {}
    fnames = draw(st.lists(K8S_NAME, min_size=1, max_size=2, unique=True))
    filters = []
    for name in fnames:
        wasm = "filters/" + draw(NAME)
        if wasm in files:
            wasm += "-2"
        files[wasm] = proxy_wasm_module(name)
        f: dict[str, Any] = {"name": name, "wasm": wasm}
        for key in ("rootId", "vmId"):
            if draw(st.booleans()):
                f[key] = draw(ODD)
        if draw(st.booleans()):
            f["config"] = draw(ODD | st.dictionaries(ODD, ODD, max_size=2))
        filters.append(f)
    services = []
    for name in draw(st.lists(K8S_NAME, min_size=1, max_size=2, unique=True)):
        directory = f"apps/{name}-" + draw(NAME)
        spelt = draw(st.sampled_from([directory, "./" + directory, directory + "/", directory + "/."]))
        labels = draw(st.dictionaries(LABEL_KEY, LABEL_VALUE, min_size=1, max_size=3))
        deployment = draw(K8S_NAME)
        namespace = draw(st.sampled_from(["default", "team-a"]))
        files[f"{directory}/kustomization.yaml"] = b"resources: [deployment.yaml]\n"
        files[f"{directory}/deployment.yaml"] = dump({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": deployment, "namespace": namespace},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}}}).encode()
        s: dict[str, Any] = {"name": name, "namespace": namespace, "deployment": deployment,
                             "resources": [spelt], "filters": [draw(st.sampled_from(fnames))]}
        if draw(st.booleans()):
            s["selector"] = dict(list(labels.items())[:1])
        services.append(s)
    spec: dict[str, Any] = {"apiVersion": "wasm-gitops/v1", "kind": "FilterSet", "istio": "1.22",
                            "filters": filters, "services": services}
    if draw(st.booleans()):
        gitops: dict[str, Any] = {"repoURL": draw(ODD), "argocd": {"mode": draw(st.sampled_from(
            ["Application", "ApplicationSet"]))}, "flux": {"mode": "Kustomization"}}
        for key in ("targetRevision", "path"):
            if draw(st.booleans()):
                gitops[key] = draw(ODD)
        spec["gitops"] = gitops
    return spec, files


@settings(max_examples=int(os.environ.get("WASM_GITOPS_AGREEMENT_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=odd_repos())
def test_what_validate_accepts_renders_and_builds(tmp_path: Path, case: tuple[dict[str, Any], dict[str, bytes]]) -> None:
    spec, files = case
    root = tmp_path / "odd"
    if root.exists():
        shutil.rmtree(root)
    repo = Repo(root)
    root.mkdir()
    for rel, data in files.items():
        repo.write(rel, data)
    repo.write("filters.yaml", dump(spec))
    validated = repo.cli("validate")
    assert validated.exit_code in (0, 2), validated.output
    event(f"validate exit {validated.exit_code}")
    if validated.exit_code == 2:
        assert all(line.startswith("filters.yaml:") for line in validated.output.splitlines()), validated.output
        return
    rendered = repo.cli("render")
    assert rendered.exit_code == 0, f"validate accepted it, render said:\n{rendered.output}"
    assert kustomize(root), "the root kustomization builds to nothing"
    for s in spec["services"]:
        assert kustomize(root / "overlays" / s["name"])


# ------------------------------------------------------------------ hostile input files

def _limited(kib: int) -> Any:
    """preexec_fn: an address-space limit, as `ulimit -v KIB` sets it."""
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (kib * 1024, kib * 1024))


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["validate", "render", "check", "diff"])
def test_a_device_as_the_spec_is_refused_at_once(repo: Repo, command: str) -> None:
    # Refused by its fstat, never read: the message names the device (a read would never end).
    result = subprocess.run([sys.executable, "-m", "renderer", command, "-f", "/dev/zero"], capture_output=True,
                            text=True, cwd=REPO, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("wasm-gitops: /dev/zero: is a character device, not a file; pass the spec file "
                             "with -f\n")


def test_a_fifo_as_the_spec_is_refused_not_waited_on(repo: Repo) -> None:
    repo.spec.unlink()
    os.mkfifo(repo.spec)
    result = cli(repo, "validate")  # cli() has a timeout: a hang fails the test
    assert result.returncode == 2
    assert result.stderr == (f"wasm-gitops: {repo.spec}: is a FIFO (named pipe), not a file; pass the spec "
                             "file with -f\n")


def test_a_fifo_wasm_inside_the_repository_is_refused_not_waited_on(repo: Repo) -> None:
    (repo.root / "filters/example-filter.wasm").unlink()
    os.mkfifo(repo.root / "filters/example-filter.wasm")
    for command in ("validate", "render"):
        result = cli(repo, command)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "filters.yaml:6:11: wasm 'filters/example-filter.wasm' is a FIFO (named pipe), not a file; point it "
            "at the compiled .wasm module"]


def test_a_sparse_2_gib_wasm_under_a_1_gb_memory_limit_is_refused_by_its_size(repo: Repo) -> None:
    wasm = repo.root / "filters/example-filter.wasm"
    with wasm.open("r+b") as fh:
        fh.truncate(2 * 1024**3)  # sparse: no disk, but reading it would need 2 GiB of memory
    result = cli(repo, "render", preexec_fn=_limited(1_000_000))
    assert result.returncode == 2, result.stderr
    _no_traceback(result)
    assert result.stderr.splitlines() == [
        "filters.yaml:6:11: 'filters/example-filter.wasm' is 2,147,483,648 bytes; a ConfigMap holds at most "
        "1,048,576: shrink the module (wasm-opt -Oz, strip), or deliver it as an image (image: and delivery: oci "
        "or imageVolume)"]
    assert not (repo.root / "base").exists()


def test_a_sparse_2_gib_manifest_under_a_1_gb_memory_limit_is_refused_by_its_size(repo: Repo) -> None:
    manifest = repo.root / "apps/details/deployment.yaml"
    with manifest.open("r+b") as fh:
        fh.truncate(2 * 1024**3)
    result = cli(repo, "validate", preexec_fn=_limited(1_000_000))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "filters.yaml:22:17: resource 'apps/details': apps/details/deployment.yaml is 2,147,483,648 bytes, "
        "more than 16,777,216; kustomize cannot load it: replace it with the manifest")


def test_a_2_gib_sparse_spec_is_refused_before_it_is_read(repo: Repo) -> None:
    with repo.spec.open("r+b") as fh:
        fh.truncate(2 * 1024**3)
    result = cli(repo, "validate", preexec_fn=_limited(1_000_000))
    assert result.returncode == 2
    assert result.stderr == "filters.yaml:1:1: file is 2,147,483,648 bytes, more than the 16,777,216 accepted; split or shorten it\n"


def test_deep_nesting_in_a_workload_manifest_is_refused(repo: Repo) -> None:
    repo.write("apps/details/deployment.yaml", "kind: Deployment\nspec: " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = cli(repo, "validate")
    assert result.returncode == 2
    _no_traceback(result)
    assert result.stderr.splitlines()[-1].startswith(
        "filters.yaml:22:17: resource 'apps/details': apps/details/deployment.yaml:2:1006: YAML syntax error: "
        "exceeded maximum nesting depth")


@pytest.mark.parametrize("command,code", [("validate", 0), ("render", 0), ("check", 0), ("diff", 0),
                                          ("inspect", 0)])
def test_every_command_with_stdout_closed_keeps_its_exit_code(repo: Repo, command: str, code: int) -> None:
    assert cli(repo, "render").returncode == 0
    args = [command, str(repo.root / "filters/example-filter.wasm")] if command == "inspect" else \
        [command, "-f", str(repo.spec)]
    result = subprocess.run(f'"{sys.executable}" -m renderer {" ".join(args)} >&-', shell=True,  # noqa: S602
                            capture_output=False, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120,
                            check=False)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert "standard output is closed" in result.stderr
    # And the answer is still in the code: a drifted tree is exit 1 with stdout closed too.
    if command == "check":
        (repo.root / "base/kustomization.yaml").write_text("resources: []\n")
        drift = subprocess.run(f'"{sys.executable}" -m renderer check -f "{repo.spec}" >&-', shell=True,  # noqa: S602
                               stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120, check=False)
        assert drift.returncode == 1 and "Traceback" not in drift.stderr


def test_render_with_stdout_and_stderr_closed_writes_the_tree(repo: Repo) -> None:
    # A kustomize build runs too (a child process, which inherits descriptors 1 and 2): nothing of it
    # may land in a file the renderer opened on a free descriptor.
    repo.write("apps/details/kustomization.yaml", "resources: [deployment.yaml]\ncommonLabels: {team: d}\n")
    before = repo.spec.read_bytes()
    result = subprocess.run(f'"{sys.executable}" -m renderer render -f "{repo.spec}" >&- 2>&-', shell=True,  # noqa: S602
                            cwd=REPO, timeout=120, check=False)
    assert result.returncode == 0
    assert repo.spec.read_bytes() == before
    assert cli(repo, "check").returncode == 0


# ------------------------------------------------------------------ what kustomize builds

def _patch_version(repo: Repo, app: str, version: str, extra: str = "") -> None:
    repo.write(f"apps/{app}/kustomization.yaml", "resources: [deployment.yaml]\npatches:\n"
               f"  - target: {{kind: Deployment, name: {app}-v1}}\n"
               f"    patch: '[{{\"op\": \"replace\", \"path\": \"/spec/template/metadata/labels/version\", "
               f"\"value\": \"{version}\"}}]'\n" + extra)


def _selector(repo: Repo, service: str) -> dict[str, str]:
    ef = repo.load(f"overlays/{service}/example-filter.envoyfilter.yaml")
    return dict(ef["spec"]["workloadSelector"]["labels"])


def test_a_patched_pod_label_is_read_from_what_kustomize_builds(repo: Repo) -> None:
    _patch_version(repo, "details", "v2")
    result = cli(repo, "render")
    assert result.returncode == 0, result.stderr
    assert _selector(repo, "details") == {"app": "details", "version": "v2"}
    built = [d for d in kustomize(repo.root) if d["kind"] == "Deployment" and d["metadata"]["name"] == "details-v1"]
    pod_labels = built[0]["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in _selector(repo, "details").items())


def test_a_selector_on_a_common_label_is_accepted_and_a_stale_one_refused(repo: Repo) -> None:
    repo.write("apps/productpage/kustomization.yaml", "resources: [deployment.yaml]\ncommonLabels: {team: books}\n")
    spec = repo.spec.read_text().replace("selector: {app: productpage, version: v1}", "selector: {team: books}")
    repo.write("filters.yaml", spec)
    result = cli(repo, "render")
    assert result.returncode == 0, result.stderr
    assert _selector(repo, "productpage") == {"team": "books"}
    _patch_version(repo, "productpage", "v3")
    repo.write("filters.yaml", spec.replace("selector: {team: books}", "selector: {version: v1}"))
    refused = cli(repo, "validate")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "filters.yaml:15:15: selector version=v1 matches no pod of Deployment 'productpage-v1' (its pods have "
        "app=productpage, version=v3); the EnvoyFilter would silently do nothing: fix the selector"]


def test_a_name_prefix_is_what_the_deployment_is_called(repo: Repo) -> None:
    repo.write("apps/details/kustomization.yaml", "namePrefix: team-\nresources: [deployment.yaml]\n")
    assert cli(repo, "validate").returncode == 2  # details-v1 is now team-details-v1
    repo.write("filters.yaml", repo.spec.read_text().replace("deployment: details-v1", "deployment: team-details-v1"))
    result = cli(repo, "render")
    assert result.returncode == 0, result.stderr
    built = {d["metadata"]["name"]: d for d in kustomize(repo.root) if d["kind"] == "Deployment"}
    annotations = built["team-details-v1"]["spec"]["template"]["metadata"].get("annotations", {})
    assert "sidecar.istio.io/userVolume" in annotations  # the patch found the built name


def test_a_kustomize_failure_is_reported_at_the_resource(repo: Repo) -> None:
    repo.write("apps/details/kustomization.yaml", "resources: [deployment.yaml]\npatches: [{path: gone.yaml}]\n")
    result = cli(repo, "render")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("filters.yaml:22:17: resource 'apps/details': kustomize cannot build it: ")
    assert "gone.yaml" in line and str(repo.root) not in line
    assert not (repo.root / "base").exists()


def test_many_transforming_services_are_built_at_once_and_right(repo: Repo) -> None:
    big_spec(repo, 24, "k")
    for i in range(0, 24, 2):
        repo.write(f"apps/s{i}/kustomization.yaml", "resources: [deployment.yaml]\n"
                   f"commonLabels: {{shard: s{i % 3}}}\n")
    # The real kubectl, behind a wrapper on PATH that notes each start: the count is what is asserted.
    real, log, shim = shutil.which("kubectl"), repo.root.parent / "kubectl.log", repo.root.parent / "bin"
    assert real is not None
    shim.mkdir()
    (shim / "kubectl").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    (shim / "kubectl").chmod(0o755)
    result = cli(repo, "render", env={"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    for i in range(24):
        selector = repo.load(f"overlays/s{i}/example-filter.envoyfilter.yaml")["spec"]["workloadSelector"]["labels"]
        assert selector == ({"app": f"s{i}", "shard": f"s{i % 3}", "version": "v1"} if i % 2 == 0
                            else {"app": f"s{i}", "version": "v1"})
    assert kustomize(repo.root)
    # 12 transforming services, built in batches: a couple of kustomize starts, not one each.
    starts = log.read_text().splitlines()
    assert 1 <= len(starts) <= 3 and all(line.startswith("kustomize") for line in starts), starts


def test_a_resource_directory_with_a_space_renders_and_builds(repo: Repo) -> None:
    (repo.root / "apps/details").rename(repo.root / "apps/book info")
    repo.write("filters.yaml", repo.spec.read_text().replace("apps/details", "apps/book info"))
    result = cli(repo, "render")
    assert result.returncode == 0, result.stderr
    assert repo.load("overlays/details/kustomization.yaml")["resources"][0] == "../../apps/book info"
    names = {d["metadata"]["name"] for d in kustomize(repo.root / "overlays/details")}
    assert "details-v1" in names
    assert cli(repo, "check").returncode == 0


def test_an_output_path_with_whitespace_is_refused_for_the_controllers(repo: Repo) -> None:
    repo.write("filters.yaml", repo.spec.read_text() + "gitops:\n  repoURL: https://git.example.com/m.git\n"
               "  argocd: {mode: Application}\n")
    result = subprocess.run([sys.executable, "-m", "renderer", "render", "-f", str(repo.spec), "--out",
                             str(repo.root / "deploy" / "prod mesh")], capture_output=True, text=True, cwd=REPO,
                            timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.endswith("the output directory's path 'deploy/prod mesh' holds whitespace, which "
                                  "wasm-gitops does not write into Argo CD or Flux paths; render into a directory "
                                  "without it\n")
    assert not (repo.root / "deploy").exists()
