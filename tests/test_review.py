"""`wasm-gitops diff`: the reviewer's view, object by object, with the workloads that roll."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import BASIC_SPEC, REPO, Repo, proxy_wasm_module

from renderer.reporters import report
from renderer.review import FieldChange, ObjectChange, ObjectId, Review


def rendered(repo: Repo) -> Repo:
    result = repo.cli("render")
    assert result.exit_code == 0, result.stdout
    return repo


def binary(data: bytes) -> str:
    return f"{len(data):,} bytes, sha256 of the binary {hashlib.sha256(data).hexdigest()[:12]}"


def test_a_filter_upgrade_reads_as_new_configmap_new_name_rolling_pods(repo: Repo) -> None:
    rendered(repo)
    old = (repo.root / "filters/example-filter.wasm").read_bytes()
    new = proxy_wasm_module("example-v2")
    repo.write("filters/example-filter.wasm", new)
    before = repo.tree()
    result = repo.cli("diff")
    assert result.exit_code == 1
    old_name = f"wasm-example-filter-{hashlib.sha256(old).hexdigest()[:10]}"
    new_name = f"wasm-example-filter-{hashlib.sha256(new).hexdigest()[:10]}"
    assert result.stdout.splitlines() == [
        f"+ ConfigMap default/{new_name}  (base/default/example-filter.configmap.yaml); pods roll",
        f"    replaces {old_name}",
        "    metadata.annotations[wasm-gitops.io/sha256]:",
        f"      - {hashlib.sha256(old).hexdigest()}",
        f"      + {hashlib.sha256(new).hexdigest()}",
        "    binaryData[example-filter.wasm]:",
        f"      - {binary(old)}",
        f"      + {binary(new)}",
        "    module ABI: 0.2.1",
        "    module proxy_on_* callbacks: unchanged",
        "    module imports: unchanged",
        f"- ConfigMap default/{old_name}  (base/default/example-filter.configmap.yaml); pruned after rollout",
        f"    replaced by {new_name}",
        "~ Deployment default/details-v1  (overlays/details/deployment-patch.yaml); pods roll",
        ("    spec.template.metadata.annotations[sidecar.istio.io/userVolume] (JSON) "
        "wasm-filters.projected.sources[0].configMap.name:"),
        f"      - {old_name}",
        f"      + {new_name}",
        "~ Deployment default/productpage-v1  (overlays/productpage/deployment-patch.yaml); pods roll",
        ("    spec.template.metadata.annotations[sidecar.istio.io/userVolume] (JSON) "
        "wasm-filters.projected.sources[0].configMap.name:"),
        f"      - {old_name}",
        f"      + {new_name}",
        "",
        "1 object added, 2 changed, 1 removed; workloads that will roll: default/details-v1, default/productpage-v1",
    ]
    assert base64.b64encode(new).decode()[:40] not in result.stdout, "binaryData is summarised, never printed"
    assert repo.tree() == before, "diff writes nothing"


def test_a_configuration_change_rolls_nothing(repo: Repo) -> None:
    rendered(repo)
    repo.write("filters.yaml", BASIC_SPEC.replace("config: {mode: relaxed}", "config: {mode: lenient}"))
    result = repo.cli("diff")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        ("~ EnvoyFilter default/productpage-other-filter  (overlays/productpage/other-filter.envoyfilter.yaml); "
         "listener drains"),
        "    spec.configPatches[0].patch.value.typed_config.config.configuration.value (JSON) mode:",
        "      - relaxed",
        "      + lenient",
        "",
        "0 objects added, 1 changed, 0 removed; workloads that will roll: none; listeners that drain: 1 object",
    ]


def test_a_new_service_adds_its_objects_and_rolls_its_workload(repo: Repo) -> None:
    rendered(repo)
    repo.write("filters.yaml", BASIC_SPEC + "  - name: reviews\n    namespace: bookinfo\n    deployment: reviews-v1\n"
                                            "    resources: [apps/reviews]\n    filters: [example-filter]\n")
    result = repo.cli("diff")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == ("4 objects added, 2 changed, 0 removed; workloads that will roll: bookinfo/reviews-v1; "
                         "listeners that drain: 1 object")
    module = (repo.root / "filters/example-filter.wasm").read_bytes()
    digest = hashlib.sha256(module).hexdigest()
    # Objects in a stable order: kind, then namespace/name; a kustomization.yaml is named by its file.
    assert [line for line in lines if line[:2] in ("+ ", "~ ", "- ")] == [
        f"+ ConfigMap bookinfo/wasm-example-filter-{digest[:10]}  (base/bookinfo/example-filter.configmap.yaml); "
        "pods roll",
        "+ Deployment bookinfo/reviews-v1  (overlays/reviews/deployment-patch.yaml); pods roll",
        "+ EnvoyFilter bookinfo/reviews-example-filter  (overlays/reviews/example-filter.envoyfilter.yaml); "
        "listener drains",
        "~ Kustomization base/kustomization.yaml; no mesh effect",
        "~ Kustomization kustomization.yaml; no mesh effect",
        "+ Kustomization overlays/reviews/kustomization.yaml; no mesh effect",
    ]
    assert "    + resources: overlays/reviews" in lines  # the root gains the overlay
    assert "    + resources: bookinfo/example-filter.configmap.yaml" in lines
    assert f"    binaryData[example-filter.wasm]: {binary(module)}" in lines


def test_a_dropped_service_is_reported_as_leaving_the_tree_not_rolling(repo: Repo) -> None:
    # The team's resources hold more than the Deployment: every object of them leaves the built tree.
    repo.write("apps/details/service.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: details}\n"
               "spec: {selector: {app: details}, ports: [{port: 9080}]}\n")
    repo.write("apps/details/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1beta1\n"
               "kind: Kustomization\nresources: [deployment.yaml, service.yaml]\n")
    rendered(repo)
    spec = BASIC_SPEC[:BASIC_SPEC.index("  - name: details\n")]
    repo.write("filters.yaml", spec)
    result = repo.cli("diff")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        "- Deployment default/details-v1  (overlays/details/deployment-patch.yaml); pruned",
        "    its overlay is gone: Argo CD and Flux (prune) delete this workload unless something else manages it",
        "- Service default/details  (apps/details); pruned",
        "    leaves the tree with its overlay's resources: Argo CD and Flux (prune) delete it unless something "
        "else manages it",
        "- EnvoyFilter default/details-example-filter  (overlays/details/example-filter.envoyfilter.yaml); "
        "listener drains",
        "~ Kustomization kustomization.yaml; no mesh effect",
        "    - resources: overlays/details",
        "- Kustomization overlays/details/kustomization.yaml; no mesh effect",
        "",
        ("0 objects added, 1 changed, 4 removed; workloads that will roll: none; listeners that drain: 1 object; "
         "workloads leaving the tree (pruned unless managed elsewhere): default/details-v1"),
    ]


def test_no_change_says_so_and_exits_0(repo: Repo) -> None:
    rendered(repo)
    result = repo.cli("diff")
    assert (result.exit_code, result.stdout) == (0, ("0 objects added, 0 changed, 0 removed; workloads that will "
                                                    "roll: none\n"))
    assert repo.cli("diff", "--format", "unified").stdout == ""


def test_a_hand_edit_without_meaning_is_a_note_and_still_drift(repo: Repo) -> None:
    rendered(repo)
    path = repo.root / "overlays/details/kustomization.yaml"
    path.write_text(path.read_text() + "# tweaked\n")
    result = repo.cli("diff")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "note: overlays/details/kustomization.yaml was edited by hand; render overwrites it",
        "",
        "0 objects added, 0 changed, 0 removed; workloads that will roll: none",
    ]


def test_unified_stays_available_and_text_is_the_default(repo: Repo) -> None:
    rendered(repo)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v3"))
    text = repo.cli("diff").stdout
    unified = repo.cli("diff", "--format", "unified").stdout
    assert "--- a/overlays/details/deployment-patch.yaml" in unified
    assert not text.startswith("---") and "pods roll" in text


def test_github_format_is_one_workflow_command_per_line_summary_first(repo: Repo) -> None:
    rendered(repo)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v4"))
    result = repo.cli("diff", "--format", "github")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == ("::notice title=wasm-gitops diff::1 object added, 2 changed, 1 removed; workloads that "
                        "will roll: default/details-v1, default/productpage-v1")
    # The spec's warnings come as annotations on filters.yaml, right after the summary.
    assert lines[1].startswith("::warning file=filters.yaml,line=10,col=13::the module exports no proxy_on_configure")
    assert all(line.startswith("::notice ") for line in lines[2:])
    assert len(lines) == 6
    rolls = [line for line in lines if "Deployment" in line and "(pods roll)" in line]
    assert [line.split(",title=")[0] for line in rolls] == [
        "::notice file=overlays/details/deployment-patch.yaml",
        "::notice file=overlays/productpage/deployment-patch.yaml"]
    assert "::spec.template.metadata.annotations[sidecar.istio.io/userVolume] (JSON) " in rolls[0]
    assert sum("(pruned after rollout)" in line for line in lines) == 1
    assert "%0A  - wasm-example-filter-" in rolls[0]


def test_github_escapes_properties_and_data() -> None:
    review = Review((ObjectChange("changed", ObjectId("EnvoyFilter", "ns", "a"), "odd,na:me.yaml",
                                  (FieldChange("x", "50%", "1\n2"),)),), (), (), (), ())
    lines = report("review", "github", review).splitlines()
    assert lines[1] == "::notice file=odd%2Cna%3Ame.yaml,title=~ EnvoyFilter ns/a (no mesh effect)::x: 50%25 -> 1%0A2"


def test_gitops_objects_show_up_as_objects(repo: Repo) -> None:
    rendered(repo)
    repo.write("filters.yaml", BASIC_SPEC + "gitops:\n  repoURL: https://git.example.invalid/m.git\n  argocd: {}\n")
    lines = repo.cli("diff").stdout.splitlines()
    assert "+ Application argocd/wasm-filters  (gitops/argocd/wasm-filters.application.yaml); no mesh effect" in lines
    assert ("    spec.syncPolicy.syncOptions: ServerSideApply=true, FailOnSharedResource=true, "
            "ApplyOutOfSyncOnly=true") in lines
    assert lines[-1] == "1 object added, 0 changed, 0 removed; workloads that will roll: none"


def test_the_example_ci_workflow_reviews_a_pull_request_against_its_base(repo: Repo, tmp_path: Path) -> None:
    """Run the review step of docs/ci/github-actions.yml, as written, on a clone with a pull request."""
    workflow = yaml.safe_load((REPO / "docs/ci/github-actions.yml").read_text())
    steps = {s.get("name"): s for s in workflow["jobs"]["wasm-gitops"]["steps"]}
    check = steps["The committed render matches filters.yaml"]["run"]
    review = steps["What this pull request changes in the cluster"]["run"]

    def sh(cwd: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], check=False, cwd=cwd, capture_output=True,
                              text=True, env={**os.environ, "PATH": path, **env}, timeout=300)

    git = ("git -c user.name=t -c user.email=t@example.invalid -c init.defaultBranch=main "
           "-c commit.gpgsign=false")
    rendered(repo)
    assert sh(repo.root, f"{git} init -q && {git} add -A && {git} commit -q -m base").returncode == 0
    clone = tmp_path / "clone"
    assert sh(tmp_path, f"{git} clone -q {repo.root} {clone}").returncode == 0
    Repo(clone).write("filters/example-filter.wasm", proxy_wasm_module("example-pr"))
    assert Repo(clone).cli("render").exit_code == 0
    assert sh(clone, f"{git} checkout -q -b upgrade && {git} add -A && {git} commit -q -m upgrade").returncode == 0

    checked = sh(clone, check)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    summary = tmp_path / "summary.md"
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    done = sh(clone, review, BASE_REF="main", GITHUB_STEP_SUMMARY=str(summary), RUNNER_TEMP=str(runner_temp))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == ("::notice title=wasm-gitops diff::1 object added, 2 changed, 1 removed; "
                                           "workloads that will roll: default/details-v1, default/productpage-v1")
    text = summary.read_text()
    assert text.startswith("<!-- wasm-gitops diff part 1 -->\n## wasm-gitops diff\n\n1 object added, 2 changed, "
                           "1 removed; 2 workloads will roll.\n")
    assert "| workloads whose pods roll (2) | <code>default/details-v1</code>, <code>default/productpage-v1</code> |" in text
    assert (runner_temp / "wasm-gitops-comment" / "part-1-of-1.md").read_text() == text


WASM_PLUGIN_SPEC = BASIC_SPEC.replace('istio: "1.22"\n', 'istio: "1.22"\noutput: {kind: WasmPlugin}\n')


def effects(repo: Repo) -> dict[str, str]:
    doc = json.loads(repo.cli("diff", "--format", "json").stdout)
    return {f"{o['kind']} {o['namespace']}/{o['name']}": o["effect"] for o in doc["objects"]}


def test_a_wasm_plugin_configuration_change_is_hot(repo: Repo) -> None:
    repo.write("filters.yaml", WASM_PLUGIN_SPEC)
    rendered(repo)
    repo.write("filters.yaml", WASM_PLUGIN_SPEC.replace("config: {mode: relaxed}", "config: {mode: lenient}"))
    result = repo.cli("diff")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "~ WasmPlugin default/productpage-other-filter  (overlays/productpage/other-filter.wasmplugin.yaml); hot",
        "    spec.pluginConfig.mode: relaxed -> lenient",
        "",
        "0 objects added, 1 changed, 0 removed; workloads that will roll: none; applied without a restart: 1",
    ]


def test_a_wasm_plugin_reorder_drains_the_listener_and_shows_the_chain(repo: Repo) -> None:
    repo.write("filters.yaml", WASM_PLUGIN_SPEC)
    rendered(repo)
    swapped = WASM_PLUGIN_SPEC.replace("      - example-filter\n      - {name: other-filter, config: {mode: relaxed}}\n",
                                       "      - {name: other-filter, config: {mode: relaxed}}\n      - example-filter\n")
    repo.write("filters.yaml", swapped)
    lines = repo.cli("diff").stdout.splitlines()
    assert ("filter chain of productpage: example-filter -> other-filter -> router becomes "
            "other-filter -> example-filter -> router") in lines
    found = effects(repo)
    assert found["WasmPlugin default/productpage-example-filter"] == "listener drains"
    assert found["WasmPlugin default/productpage-other-filter"] == "listener drains"
    assert found["Deployment default/productpage-v1"] == "pods roll"  # the projected volume's order changed too


def test_every_effect_label_in_json(repo: Repo) -> None:
    """One golden case per label, in one diff: a new binary, a config change, a dropped service."""
    rendered(repo)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-json"))
    repo.write("filters.yaml", BASIC_SPEC[:BASIC_SPEC.index("  - name: details\n")]
               .replace("config: {mode: relaxed}", "config: {mode: lenient}"))
    doc = json.loads(repo.cli("diff", "--format", "json").stdout)
    assert doc["schemaVersion"] == 1 and doc["clean"] is False
    found = {f"{o['state']} {o['kind']} {o['name']}": o["effect"] for o in doc["objects"]}
    example = hashlib.sha256(proxy_wasm_module("example-json")).hexdigest()[:10]
    assert found[f"added ConfigMap wasm-example-filter-{example}"] == "pods roll"
    assert [e for k, e in found.items() if k.startswith("removed ConfigMap")] == ["pruned after rollout"]
    assert found["changed Deployment productpage-v1"] == "pods roll"
    assert found["removed Deployment details-v1"] == "pruned"
    assert found["changed EnvoyFilter productpage-other-filter"] == "listener drains"
    assert found["changed Kustomization kustomization.yaml"] == "no mesh effect"
    assert set(doc["summary"]["effects"]) == {"pods roll", "listener drains", "hot", "pruned after rollout",
                                              "pruned", "no mesh effect"}
    assert doc["summary"]["workloads_leaving"] == ["default/details-v1"]
    module = next(o["module"] for o in doc["objects"] if o["kind"] == "ConfigMap" and o["state"] == "added")
    assert module["abi_after"] == "0.2.1" and module["only_custom_sections_changed"] is False


def test_a_rebuild_that_only_changes_custom_sections_says_the_code_is_identical(repo: Repo) -> None:
    from wasm_sections import with_custom_section

    rendered(repo)
    module = (repo.root / "filters/example-filter.wasm").read_bytes()
    repo.write("filters/example-filter.wasm", with_custom_section(module, "build_id", b"ci-run-2"))
    lines = repo.cli("diff").stdout.splitlines()
    assert "    module code: identical; only custom sections (names, build ids, debug info) changed" in lines


def test_a_new_callback_and_import_are_named(repo: Repo) -> None:
    import wasmtime

    rendered(repo)
    richer = bytes(wasmtime.wat2wasm(
        '(module (import "env" "proxy_log" (func (param i32 i32 i32) (result i32))) (memory (export "memory") 1)'
        ' (func (export "proxy_abi_version_0_2_1")) (func (export "proxy_on_memory_allocate") (param i32)'
        ' (result i32) i32.const 0) (func (export "proxy_on_context_create") (param i32 i32))'
        ' (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 0))'))
    repo.write("filters/example-filter.wasm", richer)
    lines = repo.cli("diff").stdout.splitlines()
    assert "    module proxy_on_* callbacks: +proxy_on_request_headers, -proxy_on_response_headers" in lines
    assert "    module imports: +env.proxy_log" in lines


def test_unified_puts_the_manifest_last_and_labels_digests(repo: Repo) -> None:
    rendered(repo)
    new = proxy_wasm_module("example-unified", pad=2000)  # its base64 line is summarised, not printed
    repo.write("filters/example-filter.wasm", new)
    text = repo.cli("diff", "--format", "unified").stdout
    files = [line[4:] for line in text.splitlines() if line.startswith("+++ ")]
    assert files[-1] == "b/.wasm-gitops-manifest.json" and len(files) > 1
    assert max(len(line) for line in text.splitlines()) <= 400, "no base64 line is printed whole"
    assert (f"+  example-filter.wasm: <{len(base64.b64encode(new)):,} characters of base64: {len(new):,} bytes, "
            f"sha256 of the binary {hashlib.sha256(new).hexdigest()[:12]}...>") in text.splitlines()


TRAFFIC_EXTENSION_SPEC = WASM_PLUGIN_SPEC.replace('istio: "1.22"', 'istio: "1.30"').replace(
    "output: {kind: WasmPlugin}", "output: {kind: TrafficExtension}")


def test_a_traffic_extension_is_judged_like_the_wasm_plugin_it_succeeds(repo: Repo) -> None:
    assert TRAFFIC_EXTENSION_SPEC != WASM_PLUGIN_SPEC
    repo.write("filters.yaml", TRAFFIC_EXTENSION_SPEC)
    rendered(repo)
    # Its Wasm fields (under spec.wasm) come over ECDS: hot, no drain, no restart.
    repo.write("filters.yaml", TRAFFIC_EXTENSION_SPEC.replace("config: {mode: relaxed}", "config: {mode: lenient}"))
    assert effects(repo) == {"TrafficExtension default/productpage-other-filter": "hot"}
    # Its placement is the listener's: a reorder drains, and the chain is shown in the new order.
    swapped = TRAFFIC_EXTENSION_SPEC.replace(
        "      - example-filter\n      - {name: other-filter, config: {mode: relaxed}}\n",
        "      - {name: other-filter, config: {mode: relaxed}}\n      - example-filter\n")
    repo.write("filters.yaml", swapped)
    found = effects(repo)
    assert found["TrafficExtension default/productpage-example-filter"] == "listener drains"
    assert ("filter chain of productpage: example-filter -> other-filter -> router becomes "
            "other-filter -> example-filter -> router") in repo.cli("diff").stdout.splitlines()
