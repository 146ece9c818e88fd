"""docs/ci/github-actions.yml as GitHub runs it: which pull requests start it, and how its comment step
keeps one review comment per part, updated in place, on the pull request."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, make_repo, proxy_wasm_module

WORKFLOW = REPO / "docs/ci/github-actions.yml"
# What the recipe filtered on before: it let a workload edit through without a run.
OLD_PATHS = ["filters.yaml", "**/*.wasm", "base/**", "overlays/**", "gitops/**", "kustomization.yaml",
             ".wasm-gitops-manifest.json"]


def _glob(pattern: str) -> re.Pattern[str]:
    """GitHub's filter pattern syntax: * no slash, ** anything, ? one character."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def triggers(event: dict[str, Any] | None, changed: list[str]) -> bool:
    """Whether a pull_request event with these filters runs for a pull request changing `changed`."""
    event = event or {}
    if "paths" in event:
        def included(path: str) -> bool:
            verdict = False
            for pattern in event["paths"]:  # the last matching pattern decides; ! excludes
                negative = pattern.startswith("!")
                if _glob(pattern.lstrip("!")).match(path):
                    verdict = not negative
            return verdict
        return any(included(p) for p in changed)
    if "paths-ignore" in event:
        return any(not any(_glob(p).match(path) for p in event["paths-ignore"]) for path in changed)
    return True


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_the_workflow_runs_for_a_workload_edit_alone() -> None:
    on = workflow().get("on", workflow().get(True))  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in on
    edit = ["apps/bookinfo/details/deployment.yaml"]
    assert triggers(on["pull_request"], edit)
    for changed in (["filters.yaml"], ["filters/example-filter/example-filter.wasm"], ["teams/a/svc.yaml"]):
        assert triggers(on["pull_request"], changed), changed
    # The matcher can say no: the old filter missed exactly this edit.
    assert not triggers({"paths": OLD_PATHS}, edit)
    assert triggers({"paths": OLD_PATHS}, ["overlays/details/kustomization.yaml"])


FAKE_GH = r'''#!/usr/bin/env python3
"""A stand-in for the GitHub REST API behind `gh api`: issue comments in a JSON file, every call logged."""
import json, os, subprocess, sys
state_path = os.environ["FAKE_GH_STATE"]
state = json.load(open(state_path))
args = sys.argv[1:]
assert args[0] == "api", args
method, path, jq, body = "GET", None, None, None
i = 1
while i < len(args):
    a = args[i]
    if a == "--method": method = args[i + 1]; i += 2
    elif a == "--jq": jq = args[i + 1]; i += 2
    elif a == "-F": key, _, value = args[i + 1].partition("="); body = open(value[1:]).read(); i += 2
    elif a == "--paginate": i += 1
    else: path = a; i += 1
state["calls"].append([method, path])
repo, pr = os.environ["REPO"], os.environ["PR"]
if method == "GET" and path == f"repos/{repo}/issues/{pr}/comments":
    text = json.dumps(state["comments"])
    out = subprocess.run(["jq", "-r", jq], input=text, capture_output=True, text=True, check=True).stdout if jq else text
    sys.stdout.write(out)
elif method == "POST" and path == f"repos/{repo}/issues/{pr}/comments":
    state["next"] += 1
    state["comments"].append({"id": state["next"], "body": body})
elif method == "PATCH" and path.startswith(f"repos/{repo}/issues/comments/"):
    cid = int(path.rsplit("/", 1)[1])
    [c for c in state["comments"] if c["id"] == cid][0]["body"] = body
elif method == "DELETE" and path.startswith(f"repos/{repo}/issues/comments/"):
    cid = int(path.rsplit("/", 1)[1])
    state["comments"] = [c for c in state["comments"] if c["id"] != cid]
else:
    sys.exit(f"unexpected call {method} {path}")
json.dump(state, open(state_path, "w"))
'''


@pytest.fixture
def gh(tmp_path: Path) -> Path:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (Debian: apt-get install jq); gh api --jq filters with the same language")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "gh"
    script.write_text(FAKE_GH.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1))
    script.chmod(0o755)
    return bin_dir


def step(name: str) -> str:
    steps = {s.get("name"): s for s in workflow()["jobs"]["wasm-gitops"]["steps"]}
    run: str = steps[name]["run"]
    return run


def sh(cwd: Path, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300, check=False)


def test_the_comment_is_posted_once_then_updated_in_place(tmp_path: Path, gh: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert repo.cli("render").exit_code == 0
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    state = tmp_path / "gh-state.json"
    human = {"id": 7, "body": "LGTM once the diff is green"}
    # An earlier push left three parts; this one needs one.
    old = [{"id": 10 + n, "body": f"<!-- wasm-gitops diff part {n} -->\nold part {n}"} for n in (1, 2, 3)]
    state.write_text(json.dumps({"comments": [human, *old], "next": 100, "calls": []}))
    env = {"PATH": f"{gh}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "RUNNER_TEMP": str(runner_temp), "FAKE_GH_STATE": str(state), "REPO": "org/mesh", "PR": "42",
           "GH_TOKEN": "unused"}

    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v9"))
    comment = runner_temp / "wasm-gitops-comment"
    made = subprocess.run([str(Path(sys.executable).parent / "wasm-gitops"), "diff", "-f", str(repo.spec),
                           "--format", "markdown", "--split", str(comment)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert made.returncode == 1, made.stderr
    post = sh(repo.root, step("Post the review as a pull request comment, updated in place"), env)
    assert post.returncode == 0, post.stderr
    after = json.loads(state.read_text())
    part = (comment / "part-1-of-1.md").read_text()
    assert after["comments"] == [human, {"id": 11, "body": part}]
    assert [c for c in after["calls"] if c[0] != "GET"] == [
        ["PATCH", "repos/org/mesh/issues/comments/11"], ["DELETE", "repos/org/mesh/issues/comments/12"],
        ["DELETE", "repos/org/mesh/issues/comments/13"]]

    # A pull request without an earlier review comment gets a new one, after the people's comments.
    state.write_text(json.dumps({"comments": [human], "next": 100, "calls": []}))
    assert sh(repo.root, step("Post the review as a pull request comment, updated in place"), env).returncode == 0
    assert json.loads(state.read_text())["comments"] == [human, {"id": 101, "body": part}]
