"""gitops: the Argo CD and Flux objects render writes beside the tree, and what they point at.

Byte-for-byte output is pinned by the golden cases tests/specs/good/gitops-*.yaml; these tests check
the properties that make those objects right: every path they name builds with the real kustomize,
the root does not include them, the sync settings are the documented ones, and spec mistakes are
reported at their position.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import BASIC_SPEC, Repo, kustomize

from renderer.conformance import validate_objects

GITOPS = """\
gitops:
  repoURL: https://git.example.invalid/mesh.git
  argocd: {}
  flux: {}
"""


def with_gitops(repo: Repo, section: str = GITOPS, spec: str = BASIC_SPEC) -> None:
    repo.write("filters.yaml", spec + section)


def render(repo: Repo, *args: str) -> None:
    result = repo.cli("render", *args)
    assert result.exit_code == 0, result.output


def gitops_files(root: Path) -> dict[str, Any]:
    return {p.relative_to(root).as_posix(): p for p in sorted((root / "gitops").rglob("*")) if p.is_file()}


def ids(objs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objs}


def test_application_points_at_the_root_which_builds_and_does_not_hold_it(repo: Repo) -> None:
    with_gitops(repo)
    render(repo)
    assert sorted(gitops_files(repo.root)) == ["gitops/argocd/wasm-filters.application.yaml",
                                               "gitops/flux/wasm-filters.yaml"]
    app = repo.load("gitops/argocd/wasm-filters.application.yaml")
    assert app["spec"]["source"] == {"repoURL": "https://git.example.invalid/mesh.git", "targetRevision": "HEAD",
                                     "path": "."}
    flux = repo.load("gitops/flux/wasm-filters.yaml")
    assert flux["spec"]["path"] == "./"
    assert flux["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "flux-system"}
    # What both controllers build is the root; it holds every rendered object and none of gitops/.
    root = kustomize(repo.root / app["spec"]["source"]["path"])
    kinds = {o["kind"] for o in root}
    assert {"ConfigMap", "Deployment", "EnvoyFilter"} <= kinds
    assert not kinds & {"Application", "ApplicationSet"}
    assert all(o["apiVersion"] != "kustomize.toolkit.fluxcd.io/v1" for o in root)
    assert "gitops" not in repo.load("kustomization.yaml")["resources"]
    # No kustomization.yaml under gitops/: kustomize and Flux would take the directory for a root.
    assert not [p for p in gitops_files(repo.root) if p.endswith("/kustomization.yaml")]


def test_sync_settings_are_the_documented_ones(repo: Repo) -> None:
    with_gitops(repo)
    render(repo)
    app = repo.load("gitops/argocd/wasm-filters.application.yaml")
    policy = app["spec"]["syncPolicy"]
    assert policy["automated"] == {"prune": True, "selfHeal": True}
    assert set(policy["syncOptions"]) == {"ServerSideApply=true", "FailOnSharedResource=true",
                                          "ApplyOutOfSyncOnly=true"}
    # PruneLast stays on the ConfigMaps only; CreateNamespace would create namespaces without
    # istio-injection; a finalizer would make deleting the Application delete the workloads.
    assert not any(o.startswith(("PruneLast", "CreateNamespace")) for o in policy["syncOptions"])
    assert "finalizers" not in app["metadata"]
    assert policy["retry"]["limit"] > 0
    assert "namespace" not in app["spec"]["destination"]
    configmap = repo.load("base/default/example-filter.configmap.yaml")
    assert configmap["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "PruneLast=true"
    assert configmap["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    flux = repo.load("gitops/flux/wasm-filters.yaml")["spec"]
    assert (flux["prune"], flux["wait"], flux["deletionPolicy"]) == (True, True, "Orphan")


def test_manual_sync_keeps_the_options_but_drops_automated(repo: Repo) -> None:
    with_gitops(repo, "gitops:\n  repoURL: https://git.example.invalid/mesh.git\n  argocd: {automated: false}\n")
    render(repo)
    policy = repo.load("gitops/argocd/wasm-filters.application.yaml")["spec"]["syncPolicy"]
    assert "automated" not in policy and "ServerSideApply=true" in policy["syncOptions"]
    assert not (repo.root / "gitops/flux").exists()


PER_SERVICE = """\
gitops:
  repoURL: https://git.example.invalid/mesh.git
  argocd: {mode: ApplicationSet}
  flux: {mode: PerService}
"""


def test_per_service_objects_cover_every_overlay_and_each_path_builds(repo: Repo) -> None:
    with_gitops(repo, PER_SERVICE)
    render(repo)
    overlays = sorted(p.name for p in (repo.root / "overlays").iterdir())
    assert overlays == ["details", "productpage"]

    appset = repo.load("gitops/argocd/wasm-filters.applicationset.yaml")
    git = appset["spec"]["generators"][0]["git"]
    glob = git["directories"][0]["path"]
    # The git directory generator's glob matches exactly the overlay directories, nothing else.
    dirs = sorted(p.relative_to(repo.root).as_posix() for p in repo.root.rglob("*") if p.is_dir())
    assert [d for d in dirs if fnmatch.fnmatch(d, glob) and "/" not in d[len("overlays/"):]] == \
        [f"overlays/{o}" for o in overlays]
    template = appset["spec"]["template"]
    assert template["metadata"]["name"] == "wasm-filters-{{.path.basename}}"
    assert template["spec"]["source"]["path"] == "{{.path.path}}"
    assert appset["spec"]["goTemplate"] is True
    assert appset["spec"]["syncPolicy"] == {"preserveResourcesOnDeletion": True}
    base_app = repo.load("gitops/argocd/wasm-filters-base.application.yaml")
    assert base_app["spec"]["source"]["path"] == "base"

    # Flux: base first, then each overlay dependsOn it; each path builds on its own.
    flux = {p: repo.load(p) for p in gitops_files(repo.root) if p.startswith("gitops/flux/")}
    assert sorted(flux) == ["gitops/flux/wasm-filters-base.yaml", "gitops/flux/wasm-filters-details.yaml",
                            "gitops/flux/wasm-filters-productpage.yaml"]
    assert "dependsOn" not in flux["gitops/flux/wasm-filters-base.yaml"]["spec"]
    built: set[tuple[str, str, str]] = set()
    for obj in flux.values():
        spec = obj["spec"]
        if obj["metadata"]["name"] != "wasm-filters-base":
            assert spec["dependsOn"] == [{"name": "wasm-filters-base"}]
        objs = kustomize(repo.root / spec["path"])
        assert not ids(objs) & built, "two Kustomizations would apply the same object"
        built |= ids(objs)
    # Together they apply exactly what the root applies.
    assert built == ids(kustomize(repo.root))


def test_a_service_added_to_the_spec_gets_its_flux_kustomization_and_a_removed_one_loses_it(repo: Repo) -> None:
    with_gitops(repo, PER_SERVICE)
    render(repo)
    spec = repo.spec.read_text().replace("services:\n", "services:\n  - name: reviews\n    namespace: bookinfo\n"
                                         "    deployment: reviews-v1\n    resources: [apps/reviews]\n"
                                         "    filters: [example-filter]\n", 1)
    repo.write("filters.yaml", spec)
    render(repo)
    assert (repo.root / "gitops/flux/wasm-filters-reviews.yaml").exists()
    # The ApplicationSet needs no change: its generator finds the new overlay by itself.
    repo.write("filters.yaml", BASIC_SPEC + PER_SERVICE)
    render(repo)
    assert not (repo.root / "gitops/flux/wasm-filters-reviews.yaml").exists()


def test_switching_modes_replaces_the_generated_objects(repo: Repo) -> None:
    with_gitops(repo)
    render(repo)
    with_gitops(repo, PER_SERVICE)
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    assert sorted(gitops_files(repo.root)) == [
        "gitops/argocd/wasm-filters-base.application.yaml", "gitops/argocd/wasm-filters.applicationset.yaml",
        "gitops/flux/wasm-filters-base.yaml", "gitops/flux/wasm-filters-details.yaml",
        "gitops/flux/wasm-filters-productpage.yaml"]
    manifest = json.loads((repo.root / ".wasm-gitops-manifest.json").read_text())
    assert "gitops/argocd/wasm-filters.application.yaml" not in manifest["files"]
    assert "gitops/flux/wasm-filters-base.yaml" in manifest["files"]


def test_path_defaults_to_the_output_directory_relative_to_the_spec(repo: Repo) -> None:
    with_gitops(repo)
    render(repo, "--out", str(repo.root / "deploy" / "mesh"))
    out = repo.root / "deploy" / "mesh"
    app = json.loads(json.dumps(repo.load("deploy/mesh/gitops/argocd/wasm-filters.application.yaml")))
    assert app["spec"]["source"]["path"] == "deploy/mesh"
    assert repo.load("deploy/mesh/gitops/flux/wasm-filters.yaml")["spec"]["path"] == "./deploy/mesh"
    # The repository path really is the rendered root.
    assert ids(kustomize(repo.root / app["spec"]["source"]["path"])) == ids(kustomize(out))


def test_output_outside_the_spec_directory_needs_an_explicit_path(repo: Repo, tmp_path: Path) -> None:
    with_gitops(repo)
    elsewhere = tmp_path / "elsewhere"
    result = repo.cli("render", "--out", str(elsewhere))
    assert result.exit_code == 2
    assert "set gitops.path" in result.output
    assert not elsewhere.exists() or not any(elsewhere.iterdir())
    with_gitops(repo, GITOPS + "  path: rendered/mesh\n")
    render(repo, "--out", str(elsewhere))
    assert (repo.load(str(elsewhere / "gitops/argocd/wasm-filters.application.yaml"))
            ["spec"]["source"]["path"]) == "rendered/mesh"


def test_spec_in_a_subdirectory_of_a_git_repository_warns_about_the_path(tmp_path: Path) -> None:
    from conftest import proxy_wasm_module

    repo = Repo(tmp_path / "monorepo" / "mesh")
    (tmp_path / "monorepo" / ".git").mkdir(parents=True)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example"))
    repo.write("filters/other-filter.wasm", proxy_wasm_module("other"))
    repo.app("productpage", "productpage-v1", "productpage")
    repo.app("details", "details-v1", "details")
    with_gitops(repo)
    result = repo.cli("validate")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "Git repository" in x)
    assert line.startswith(f"filters.yaml:{BASIC_SPEC.count(chr(10)) + 1}:1: warning: filters.yaml is in mesh/")
    assert "set path: mesh" in line
    with_gitops(repo, GITOPS + "  path: mesh\n")
    assert "Git repository" not in repo.cli("validate").output


# ------------------------------------------------------------------------------------------ errors

LINE = BASIC_SPEC.count("\n") + 1  # the line of "gitops:"


@pytest.mark.parametrize(("section", "expected"), [
    ("gitops:\n  repoURL: https://x.invalid/r.git\n",
     f"filters.yaml:{LINE + 1}:3: gitops: name at least one controller: add 'argocd:' or 'flux:' (or both)"),
    ("gitops:\n  flux: {}\n  argocd: {}\n",
     f"filters.yaml:{LINE + 2}:3: gitops.argocd needs 'repoURL' in gitops; add it"),
    ("gitops:\n  repoURL: https://x.invalid/r.git\n  argocd: {automatic: false}\n",
     f"filters.yaml:{LINE + 2}:12: unknown key 'automatic' in gitops.argocd; did you mean 'automated'?"),
    ("gitops:\n  flux: {interval: 10 minutes}\n",
     (f"filters.yaml:{LINE + 1}:20: gitops.flux.interval: '10 minutes' is not a Go duration such as 10m, 90s or "
     "1h30m; fix the value")),
    ("gitops:\n  flux: {}\n  path: ../elsewhere\n",
     (f"filters.yaml:{LINE + 2}:9: gitops.path '../elsewhere' must be a '/'-separated path relative to the "
     "repository root, without '..'; fix it")),
    ("gitops:\n  flux: {mode: Everything}\n",
     (f"filters.yaml:{LINE + 1}:16: gitops.flux.mode: 'Everything' is not allowed; use one of: Kustomization, "
     "PerService")),
])
def test_spec_mistakes_are_reported_where_they_are(repo: Repo, section: str, expected: str) -> None:
    with_gitops(repo, section)
    result = repo.cli("validate")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [expected]


def test_a_service_named_base_collides_in_the_per_service_modes_only(repo: Repo) -> None:
    spec = BASIC_SPEC.replace("  - name: details\n", "  - name: base\n")
    with_gitops(repo, "gitops:\n  flux: {}\n", spec=spec)
    assert repo.cli("validate").exit_code == 0
    with_gitops(repo, "gitops:\n  flux: {mode: PerService}\n", spec=spec)
    result = repo.cli("validate")
    assert result.exit_code == 2
    line = spec.splitlines().index("  - name: base") + 1
    assert result.output.splitlines() == [
        (f"filters.yaml:{line}:11: service name 'base' collides with the Flux Kustomization for base/ "
        "(wasm-filters-base); rename the service")]


def test_per_service_names_must_fit_a_label_value(repo: Repo) -> None:
    long_name = "n" * 60
    with_gitops(repo, f"gitops:\n  name: {long_name}\n  repoURL: https://x.invalid/r.git\n"
                      "  argocd: {mode: ApplicationSet}\n")
    result = repo.cli("validate")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert (f"filters.yaml:{LINE + 1}:9: the Argo CD Application for base/ would be named {long_name}-base, more "
            "than 63 characters; shorten gitops.name") in lines
    assert (f"filters.yaml:12:11: the Argo CD Application for this service would be named {long_name}-productpage, "
            "more than 63 characters; shorten the service name or gitops.name") in lines
    assert len(lines) == 3


# ------------------------------------------------------------------------------------------ validation

def test_gitops_objects_are_validated_against_closed_schemas(repo: Repo) -> None:
    with_gitops(repo, PER_SERVICE)
    render(repo)
    objs = [(p, repo.load(p)) for p in gitops_files(repo.root)]
    assert validate_objects(objs) == []
    app = next(o for p, o in objs if o["kind"] == "Application")
    app["spec"]["syncPolicy"]["syncOptions"].append("PruneLast=True")  # Argo CD wants "true"
    app["spec"]["syncPolicy"]["automatic"] = {"prune": True}
    flux = next(o for p, o in objs if o["kind"] == "Kustomization")
    flux["spec"]["path"] = "overlays/details"  # Flux paths are './'-prefixed here
    problems = [str(p) for p in validate_objects(objs)]
    assert any("'PruneLast=True' is not one of" in p for p in problems), problems
    assert any("automatic" in p for p in problems), problems
    assert any("Kustomization" in p and "$.spec.path" in p for p in problems), problems
