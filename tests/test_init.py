"""`wasm-gitops init`: a starter spec that is valid YAML for the schema, and valid once its paths exist."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
from conftest import REPO, Repo, kustomize, proxy_wasm_module

from renderer.spec import load_schema
from renderer.yamlio import load_document

MODELINE = "# yaml-language-server: $schema="


def init(directory: Path, *args: str) -> tuple[int, str, str]:
    result = Repo(directory).run("init", str(directory), *args)
    return result.exit_code, result.stdout, result.stderr


def test_the_starter_is_schema_valid_yaml_and_validates_once_its_paths_exist(tmp_path: Path) -> None:
    project = tmp_path / "project"
    code, out, _ = init(project)
    assert code == 0, out
    spec = project / "filters.yaml"
    text = spec.read_text(encoding="utf-8")
    data = load_document(text, "filters.yaml").data  # the loader the renderer itself uses
    jsonschema.Draft202012Validator(load_schema()).validate(data)

    repo = Repo(project)
    before = repo.cli("validate")
    assert before.exit_code == 2
    assert "wasm file 'filters/my-filter/my-filter.wasm' does not exist" in before.output
    assert "resource 'apps/my-app' does not exist" in before.output

    repo.write("filters/my-filter/my-filter.wasm", proxy_wasm_module("mine"))
    repo.app("my-app", "my-app", "my-app")
    after = repo.cli("validate")
    assert after.exit_code == 0, after.output
    assert after.stdout.startswith(f"{spec}: valid")
    assert repo.cli("render").exit_code == 0
    deployment = next(o for o in kustomize(project) if o["kind"] == "Deployment")
    assert "sidecar.istio.io/userVolume" in deployment["spec"]["template"]["metadata"]["annotations"]


def test_the_commented_gitops_block_is_valid_once_uncommented(tmp_path: Path) -> None:
    project = tmp_path / "project"
    assert init(project)[0] == 0
    spec = project / "filters.yaml"
    lines = spec.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("# gitops:\n")
    block = [line.removeprefix("# ") for line in lines[start:]]
    assert block[0] == "gitops:\n" and all(line.startswith("  ") for line in block[1:])
    spec.write_text("".join(lines[:start] + block), encoding="utf-8")
    repo = Repo(project)
    repo.write("filters/my-filter/my-filter.wasm", proxy_wasm_module("mine"))
    repo.app("my-app", "my-app", "my-app")
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    assert (project / "gitops/argocd/wasm-filters.application.yaml").is_file()
    assert (project / "gitops/flux/wasm-filters.yaml").is_file()


def test_init_never_overwrites_a_spec(tmp_path: Path) -> None:
    spec = tmp_path / "filters.yaml"
    spec.write_text("mine\n")
    code, out, err = init(tmp_path)
    assert code == 2
    assert out == ""
    assert err == (f"wasm-gitops: {spec}: already exists; init never overwrites a spec (edit it, or choose "
                   "another directory)\n")
    assert spec.read_text() == "mine\n"


def test_outside_a_checkout_the_modeline_names_a_copy_of_the_schema_beside_the_spec(tmp_path: Path) -> None:
    code, out, err = init(tmp_path / "p")
    assert (code, err) == (0, "")
    project = tmp_path / "p"
    first = (project / "filters.yaml").read_text().splitlines()[0]
    # Relative, so it works on every clone; never a path into this machine's site-packages.
    assert first == f"{MODELINE}schemas/filters.schema.json"
    assert (project / "schemas/filters.schema.json").read_bytes() == (REPO / "schemas/filters.schema.json").read_bytes()
    assert out.splitlines()[:3] == [f"wrote {project / 'filters.yaml'}", f"wrote {project / 'schemas/filters.schema.json'}",
                                    f"wrote {project / '.gitignore'}"]
    assert str(Path(sys.prefix)) not in (project / "filters.yaml").read_text()


def test_init_ignores_the_staging_directory_a_killed_render_leaves(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".gitignore").write_text("build/\n*.log")  # the user's own lines, no final newline
    assert init(project)[0] == 0
    assert (project / ".gitignore").read_text().splitlines()[:2] == ["build/", "*.log"]
    repo = Repo(project)
    repo.write("filters/my-filter/my-filter.wasm", proxy_wasm_module("mine"))
    repo.app("my-app", "my-app", "my-app")
    # A render killed after its commit point leaves the staging directory, as a crash or ^C would.
    killed = subprocess.run([sys.executable, "-m", "renderer", "render", "-f", str(repo.spec)], cwd=project,
                            env={**os.environ, "WASM_GITOPS_KILL_AT": "apply:1"}, capture_output=True, timeout=300,
                            check=False)
    assert killed.returncode == -9, killed.stderr
    assert (project / ".wasm-gitops.tmp").is_dir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=project, check=True,
                              capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A")  # the walkthrough's command
    staged = git("ls-files").splitlines()
    assert "filters.yaml" in staged and "schemas/filters.schema.json" in staged
    assert not [f for f in staged if f.startswith(".wasm-gitops.tmp")], staged
    # Running init elsewhere in the same place adds the line once, never twice.
    (project / "filters.yaml").rename(project / "old.yaml")
    assert init(project)[0] == 0
    assert (project / ".gitignore").read_text().count(".wasm-gitops.tmp/") == 1


def test_inside_a_checkout_the_modeline_is_relative_to_the_repository_schema(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "schemas").mkdir(parents=True)
    shutil.copy(REPO / "schemas" / "filters.schema.json", checkout / "schemas" / "filters.schema.json")
    # A schemas/filters.schema.json that is not ours, nearer to the directory, is not taken.
    decoy = checkout / "examples" / "schemas"
    decoy.mkdir(parents=True)
    (decoy / "filters.schema.json").write_text('{"$id": "urn:someone-else"}')
    code, _, err = init(checkout / "examples" / "mesh")
    assert code == 0 and err == ""
    text = (checkout / "examples/mesh/filters.yaml").read_text()
    assert text.splitlines()[0] == f"{MODELINE}../../schemas/filters.schema.json"
    assert "no public URL" not in text
    assert ((checkout / "examples/mesh") / "../../schemas/filters.schema.json").resolve() == \
        (checkout / "schemas/filters.schema.json").resolve()


def test_a_file_where_the_directory_should_be_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    result = Repo(tmp_path).run("init", str(tmp_path / "taken"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
