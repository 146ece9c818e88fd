"""The output tree: pruning, hand-written files, hand edits, atomic writes, the mtime rule, check/diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Repo, proxy_wasm_module

from renderer.commands.render import render
from renderer.errors import OutputError


def drop_service(repo: Repo, name: str) -> None:
    text = repo.spec.read_text()
    start = text.index(f"  - name: {name}\n")
    rest = text[start + 1:]
    nxt = rest.find("\n  - name: ")
    end = len(text) if nxt < 0 else start + 1 + nxt + 1
    repo.write("filters.yaml", text[:start] + text[end:])


def test_stale_files_are_removed_and_their_empty_directory_too(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    assert (repo.root / "overlays/details/kustomization.yaml").exists()
    drop_service(repo, "details")
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    assert not (repo.root / "overlays/details").exists()
    root = repo.load("kustomization.yaml")
    assert root["resources"] == ["base", "overlays/productpage"]


def test_hand_written_files_survive_every_render(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    notes = repo.write("overlays/details/NOTES.md", "why details runs this filter\n")
    extra = repo.write("base/README.md", "hand-written\n")
    drop_service(repo, "details")
    assert repo.cli("render").exit_code == 0
    assert notes.read_text() == "why details runs this filter\n"
    assert extra.read_text() == "hand-written\n"
    assert not (repo.root / "overlays/details/kustomization.yaml").exists()
    assert sorted(p.name for p in (repo.root / "overlays/details").iterdir()) == ["NOTES.md"]


def test_a_file_we_did_not_write_is_never_overwritten(repo: Repo) -> None:
    mine = repo.write("kustomization.yaml", "# my own root kustomization\nresources: [apps/details]\n")
    before = repo.tree()
    result = repo.cli("render")
    assert result.exit_code == 2
    assert f"{repo.root}/kustomization.yaml: exists and was not written by wasm-gitops" in result.output
    assert "Traceback" not in result.output
    assert repo.tree() == before
    assert mine.read_text().startswith("# my own root")


def test_hand_edited_generated_file_is_reported_by_check_and_overwritten_by_render(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    target = repo.root / "overlays/productpage/example-filter.envoyfilter.yaml"
    pristine = target.read_bytes()
    target.write_bytes(pristine.replace(b"fail_open: false", b"fail_open: true"))
    check = repo.cli("check")
    assert check.exit_code == 1
    assert "changed  overlays/productpage/example-filter.envoyfilter.yaml" in check.output
    assert "edited   overlays/productpage/example-filter.envoyfilter.yaml" in check.output
    render = repo.cli("render")
    assert render.exit_code == 0
    assert "overwrote overlays/productpage/example-filter.envoyfilter.yaml, which had been edited by hand" in render.output
    assert target.read_bytes() == pristine


def test_a_hand_edited_stale_file_is_not_deleted(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    target = repo.root / "overlays/details/example-filter.envoyfilter.yaml"
    target.write_text(target.read_text() + "# my note\n")
    drop_service(repo, "details")
    before = repo.tree()
    result = repo.cli("render")
    assert result.exit_code == 2
    assert "was generated, then edited by hand, and is no longer produced" in result.output
    assert repo.tree() == before


def test_unchanged_files_keep_their_mtime_and_inode(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    files = sorted(repo.outputs())
    stat = {p: os.stat(repo.root / p) for p in files}
    repo.write("filters/other-filter.wasm", proxy_wasm_module("other-v2"))
    result = repo.cli("render")
    assert result.exit_code == 0
    after = {p: os.stat(repo.root / p) for p in files if (repo.root / p).exists()}
    changed = {p for p in after
               if (after[p].st_mtime_ns, after[p].st_ino) != (stat[p].st_mtime_ns, stat[p].st_ino)}
    # other-filter's ConfigMap file, the patch of the one service using it, and the manifest.
    assert changed == {".wasm-gitops-manifest.json", "base/default/other-filter.configmap.yaml",
                       "overlays/productpage/deployment-patch.yaml"}


@pytest.mark.parametrize("step", ["stage", "commit", "apply"])
def test_an_error_mid_write_leaves_the_tree_exactly_as_before(repo: Repo, step: str) -> None:
    assert repo.cli("render").exit_code == 0
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v2"))
    drop_service(repo, "details")
    before = repo.tree()
    calls = {"n": 0}

    def fault(at: str) -> None:
        if at == step:
            calls["n"] += 1
            if calls["n"] == 2 or step == "commit":
                raise OSError(28, "No space left on device")

    with pytest.raises((OutputError, OSError)):
        render(repo.spec, None, fault=fault)
    if step == "commit":
        # Failing right after the commit point is a crash, not an error: the next render finishes it.
        assert repo.cli("render").exit_code == 0
        assert repo.cli("check").exit_code == 0
    else:
        assert repo.tree() == before


def _dirs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


def test_a_failed_apply_removes_the_directories_it_made(repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    repo.write("filters.yaml", repo.spec.read_text(encoding="utf-8") + (
        "  - name: reviews\n    namespace: bookinfo\n    deployment: reviews-v1\n"
        "    resources: [apps/reviews]\n    filters: [example-filter]\n"))
    before, before_dirs = repo.tree(), _dirs(repo.root)
    applied = {"n": 0}

    def fault(at: str) -> None:
        if at == "apply":
            applied["n"] += 1
            if applied["n"] == 3:  # after overlays/reviews/ was made for the new service's first file
                raise OSError(28, "No space left on device")

    with pytest.raises(OutputError):
        render(repo.spec, None, fault=fault)
    assert repo.tree() == before
    assert _dirs(repo.root) == before_dirs
    assert "overlays" in before_dirs and "overlays/reviews" not in before_dirs  # it was new
    assert repo.cli("render").exit_code == 0 and (repo.root / "overlays/reviews").is_dir()


def test_check_and_diff(repo: Repo) -> None:
    result = repo.cli("check")
    assert result.exit_code == 1
    assert "added    kustomization.yaml" in result.output
    assert repo.cli("render").exit_code == 0
    clean = repo.cli("check")
    assert clean.exit_code == 0 and "up to date" in clean.output
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v3"))
    before = repo.tree()
    diff = repo.cli("diff", "--format", "unified")
    assert diff.exit_code == 1
    assert "--- a/overlays/details/deployment-patch.yaml" in diff.output
    assert "+  name: wasm-example-filter-" in diff.output
    # the base64 line is summarised, not dumped
    assert max(len(line) for line in diff.output.splitlines()) < 500
    check = repo.cli("check", "--format", "json")
    assert check.exit_code == 1 and '"changed": [' in check.output
    assert repo.tree() == before, "check and diff write nothing"


def test_out_through_a_symlink_leaving_the_tree_is_refused(repo: Repo, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo.root / "overlays").symlink_to(elsewhere)
    result = repo.cli("render")
    assert result.exit_code == 2
    assert "outside the output directory" in result.output
    assert list(elsewhere.iterdir()) == []


def test_out_cannot_overwrite_the_spec(repo: Repo) -> None:
    # A spec named like an output file, in the output directory: render would replace it.
    spec = repo.write("kustomization.yaml", repo.spec.read_text())
    repo.spec.unlink()
    before = repo.tree()
    result = repo.run("render", "-f", str(spec), "--out", str(repo.root))
    assert result.exit_code == 2
    assert result.output == f"wasm-gitops: {spec}: is the spec itself; choose another --out\n"
    assert repo.tree() == before


def test_out_that_is_a_symlink_out_of_the_repository_is_refused(repo: Repo, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = repo.root / "rendered"
    link.symlink_to(elsewhere)
    result = repo.cli("render", "--out", str(link))
    assert result.exit_code == 2
    assert "is a symlink to" in result.output and "outside the repository" in result.output
    assert list(elsewhere.iterdir()) == []
    # The real directory, named as such, is the user's explicit choice.
    assert repo.cli("render", "--out", str(elsewhere)).exit_code == 0
    assert (elsewhere / "kustomization.yaml").exists()
