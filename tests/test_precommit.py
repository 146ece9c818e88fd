"""The pre-commit hook, run through pre-commit's own machinery: `pre-commit try-repo` installs this
repository into a fresh virtualenv (as a user's pre-commit would, from PyPI) and runs the hook in a
GitOps repository made for the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_repo, proxy_wasm_module

HOOK = "wasm-gitops-check"
# What the hook repository needs to pip-install: the package, its schemas, the build metadata.
HOOK_REPO_FILES = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "renderer", "schemas")


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=wasm-gitops tests", "-c", "user.email=tests@example.invalid",
                    "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
                   cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is required: pre-commit runs hooks from git repositories")
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        pytest.fail("pre-commit is not installed: it belongs to the test extra (pip install -e '.[test]')")
    copy = tmp_path_factory.mktemp("hook-repo")
    for name in HOOK_REPO_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, copy / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, copy / name)
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "hook repository under test")
    return copy


def try_repo(hook_repo: Path, gitops_repo: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(cache), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), HOOK, "--all-files"],
                          check=False, cwd=gitops_repo, env=env, capture_output=True, text=True, timeout=900)


def test_the_hook_passes_on_a_clean_tree_and_fails_on_drift(hook_repo: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "gitops")
    assert repo.cli("render").exit_code == 0
    git(repo.root, "init", "-q")
    git(repo.root, "add", "-A")
    cache = tmp_path / "pre-commit-cache"

    clean = try_repo(hook_repo, repo.root, cache)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "wasm-gitops check" in clean.stdout and "Passed" in clean.stdout

    # A new binary without a render: the committed tree no longer matches the spec.
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v2"))
    git(repo.root, "add", "-A")
    stale = try_repo(hook_repo, repo.root, cache)
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "Failed" in stale.stdout
    assert "changed  base/default/example-filter.configmap.yaml" in stale.stdout
    assert "out of date: " in stale.stdout and "run 'wasm-gitops render' and commit the result" in stale.stdout


def try_staged(hook_repo: Path, gitops_repo: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The hook as a commit runs it: on the staged files only, not --all-files."""
    env = {**os.environ, "PRE_COMMIT_HOME": str(cache), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), HOOK, *args],
                          check=False, cwd=gitops_repo, env=env, capture_output=True, text=True, timeout=900)


def test_a_workload_label_edit_alone_fails_the_hook(hook_repo: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "gitops")
    assert repo.cli("render").exit_code == 0
    git(repo.root, "init", "-q")
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-q", "-m", "render")
    cache = tmp_path / "pre-commit-cache"
    # details has no selector in filters.yaml: its EnvoyFilter selects the Deployment's own pod labels.
    deployment = repo.root / "apps/details/deployment.yaml"
    deployment.write_text(deployment.read_text().replace("version: v1}", "version: v4}"))
    git(repo.root, "add", "apps/details/deployment.yaml")  # the commit touches nothing but the workload
    staged = try_staged(hook_repo, repo.root, cache)
    assert staged.returncode == 1, staged.stdout + staged.stderr
    assert "changed  overlays/details/example-filter.envoyfilter.yaml" in staged.stdout


def test_a_spec_below_the_root_needs_its_path_and_says_so(hook_repo: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "gitops" / "mesh")
    assert repo.cli("render").exit_code == 0
    root = tmp_path / "gitops"
    git(root, "init", "-q")
    git(root, "add", "-A")
    cache = tmp_path / "pre-commit-cache"
    unnamed = try_staged(hook_repo, root, cache, "--all-files")
    assert unnamed.returncode == 1 and "- exit code: 2" in unnamed.stdout, unnamed.stdout
    assert "filters.yaml: no such file in " in unnamed.stdout
    assert "pass the spec with -f PATH (in .pre-commit-config.yaml: args: [-f, path/to/filters.yaml])" in unnamed.stdout

    # What the hook's documentation says to write in .pre-commit-config.yaml.
    (root / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hook_repo}\n    rev: {head(hook_repo)}\n    hooks:\n      - id: {HOOK}\n"
        "        args: [-f, mesh/filters.yaml]\n")
    git(root, "add", "-A")
    env = {**os.environ, "PRE_COMMIT_HOME": str(cache), "PRE_COMMIT_COLOR": "never"}
    named = subprocess.run([sys.executable, "-m", "pre_commit", "run", "--all-files"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=900, check=False)
    assert named.returncode == 0, named.stdout + named.stderr
    assert "wasm-gitops check" in named.stdout and "Passed" in named.stdout


def head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()
