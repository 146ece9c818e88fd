"""A spec with clusters: one tree per distinct shape over a shared base/ and overlays/, an Argo CD
ApplicationSet rolling out by wave, a Flux entry point per cluster; each checked with the real
kubectl kustomize and the consumers' real CRD schemas in ../shared/crds."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import SHARED, Repo, kustomize, proxy_wasm_module

from renderer.safepath import owned_shape

SPECS = Path(__file__).parent / "specs" / "clusters"
GOLDEN = Path(__file__).parent / "golden" / "clusters-three"
UPDATE = os.environ.get("WASM_GITOPS_UPDATE_GOLDEN") == "1"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
THREE = (SPECS / "three-clusters.yaml").read_text()
CRDS = SHARED / "crds"
needs_crds = pytest.mark.skipif(not CRDS.is_dir(), reason=f"consumer CRD schemas not found: {CRDS} is missing")


def render(repo: Repo, spec: str = THREE) -> dict[str, bytes]:
    repo.write("filters.yaml", spec)
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    return repo.outputs()


def ids(objs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objs]


def test_golden_tree(repo: Repo) -> None:
    got = render(repo)
    if UPDATE:
        for rel, data in got.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
    want = {p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want), "the set of rendered files differs from the golden tree"
    for rel in want:
        assert got[rel] == want[rel], f"{rel} differs from {GOLDEN / rel} (WASM_GITOPS_UPDATE_GOLDEN=1 rewrites it)"


def test_one_tree_per_shape_each_building_what_its_cluster_runs(repo: Repo) -> None:
    files = render(repo)
    trees = sorted({rel.split("/")[1] for rel in files if rel.startswith("trees/")})
    assert trees == ["canary", "prod-east", "prod-west"]
    assert "kustomization.yaml" not in files, "a fleet has no single root: each cluster applies its tree"
    wasm = {n: (repo.root / f"filters/{n}.wasm").read_bytes() for n in ("example-filter", "other-filter")}
    want_kind = {"canary": "EnvoyFilter", "prod-east": "WasmPlugin", "prod-west": "TrafficExtension"}
    want_services = {"canary": {"productpage-v1"}, "prod-east": {"productpage-v1", "reviews-v1"},
                     "prod-west": {"productpage-v1", "reviews-v1"}}
    for tree in trees:
        objs = kustomize(repo.root / "trees" / tree)
        found = ids(objs)
        assert len(found) == len(set(found)), f"an object comes out twice in trees/{tree}"
        attached = [o for o in objs if o["kind"] in ("EnvoyFilter", "WasmPlugin", "TrafficExtension")]
        assert {o["kind"] for o in attached} == {want_kind[tree]}
        deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
        assert set(deployments) == want_services[tree]
        configmaps = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "ConfigMap"}
        for dep in deployments.values():
            pod = dep["spec"]["template"]["metadata"]
            volumes = json.loads(pod["annotations"]["sidecar.istio.io/userVolume"])
            for source in volumes["wasm-filters"]["projected"]["sources"]:
                cm = configmaps[(dep["metadata"]["namespace"], source["configMap"]["name"])]
                data = cm["binaryData"][source["configMap"]["items"][0]["key"]]
                assert source["configMap"]["items"][0]["path"].removesuffix(".wasm") in wasm
                assert data  # the mounted ConfigMap is in the same build
            for obj in attached:
                if obj["metadata"]["namespace"] == dep["metadata"]["namespace"]:
                    labels = (obj["spec"].get("workloadSelector") or obj["spec"].get("selector"))
                    assert labels is not None
    # Istio 1.22 renders an EnvoyFilter with priority, 1.30 a WasmPlugin with failStrategy (failOpen).
    canary = repo.load("trees/canary/productpage/example-filter.envoyfilter.yaml")
    assert canary["spec"]["priority"] == 0
    east = repo.load("trees/prod-east/productpage/example-filter.wasmplugin.yaml")
    assert east["spec"]["failStrategy"] == "FAIL_OPEN"


def test_nothing_is_written_twice_and_equal_shapes_share_a_tree(repo: Repo) -> None:
    # A fourth cluster on another 1.30 patch release with the same output renders the same bytes as
    # prod-east: it gets no tree of its own, and its Flux entry point and Argo CD matrix point there.
    spec = THREE.replace("gitops:", "  - name: prod-north\n    istio: \"1.30.4\"\n    output: {kind: WasmPlugin}\n"
                         "    labels: {wave: prod, region: eu-north}\ngitops:", 1)
    files = render(repo, spec)
    assert sorted({rel.split("/")[1] for rel in files if rel.startswith("trees/")}) == \
        ["canary", "prod-east", "prod-west"]
    assert repo.load("clusters/prod-north/wasm-filters.yaml")["spec"]["path"] == "./trees/prod-east"
    appset = repo.load("gitops/argocd/wasm-filters.applicationset.yaml")
    paths = [m["matrix"]["generators"][1]["git"]["directories"][0]["path"] for m in appset["spec"]["generators"]]
    assert paths == ["trees/canary", "trees/prod-east", "trees/prod-west", "trees/prod-east"]
    # The workload parts and the ConfigMaps exist once; every tree reaches them through kustomize.
    # (Two clusters of one shape have equal Flux entry points: each cluster's Flux reads its own.)
    bodies = [data.split(b"\n", 1)[1] for rel, data in files.items() if rel.endswith(".yaml")
              and not rel.endswith("kustomization.yaml") and not rel.startswith("clusters/")]
    assert len(bodies) == len(set(bodies)), "two files hold the same object"
    assert sum(rel.endswith(".configmap.yaml") for rel in files) == 3


def test_a_spec_without_clusters_keeps_its_layout(repo: Repo) -> None:
    cut = THREE.index("\nclusters:\n")
    files = render(repo, THREE[:cut + 1] + THREE[THREE.index("\ngitops:\n") + 1:].replace("  argocd:\n    maxUpdate: {prod: 1}\n", "  argocd: {}\n"))
    assert not any(rel.startswith(("trees/", "clusters/")) for rel in files)
    assert "overlays/productpage/example-filter.envoyfilter.yaml" in files and "kustomization.yaml" in files


def test_rolling_sync_steps_follow_the_waves_in_spec_order(repo: Repo) -> None:
    spec = THREE.replace("  - name: prod-east\n", "  - name: pilot\n    labels: {wave: pilot}\n"
                         "    services: [reviews]\n  - name: prod-east\n", 1)
    render(repo, spec)
    appset = repo.load("gitops/argocd/wasm-filters.applicationset.yaml")["spec"]
    steps = appset["strategy"]["rollingSync"]["steps"]
    assert appset["strategy"]["type"] == "RollingSync"
    assert [s["matchExpressions"] for s in steps] == [
        [{"key": "wasm-gitops.io/wave", "operator": "In", "values": [w]}] for w in ("canary", "pilot", "prod")]
    assert [s.get("maxUpdate") for s in steps] == [None, None, 1]
    labels = appset["template"]["metadata"]["labels"]
    # The steps match the label the template sets from each cluster's own wave.
    assert labels["wasm-gitops.io/wave"] == "{{.values.wave}}"
    waves = [m["matrix"]["generators"][0]["clusters"]["values"]["wave"] for m in appset["generators"]]
    assert waves == ["canary", "pilot", "prod", "prod"]
    selectors = [m["matrix"]["generators"][0]["clusters"]["selector"]["matchLabels"] for m in appset["generators"]]
    assert selectors[1] == {"wave": "pilot"}
    # RollingSync turns automated sync off on what it generates: the template does not ask for it.
    assert "automated" not in appset["template"]["spec"]["syncPolicy"]


@needs_crds
def test_gitops_objects_pass_the_real_crds_and_the_bundled_schema_stays_within_it(repo: Repo) -> None:
    render(repo)
    appset_crd = json.loads((CRDS / "argocd-applicationset.v1alpha1.schema.json").read_text())
    flux_crd = json.loads((CRDS / "flux-kustomization.v1.schema.json").read_text())
    appset = repo.load("gitops/argocd/wasm-filters.applicationset.yaml")
    jsonschema.Draft7Validator(appset_crd).validate(appset)
    bundled = json.loads((SCHEMAS / "argocd-applicationset.schema.json").read_text())
    jsonschema.Draft202012Validator(bundled).validate(appset)
    for cluster in ("canary", "prod-east", "prod-west"):
        entry = repo.load(f"clusters/{cluster}/wasm-filters.yaml")
        jsonschema.Draft7Validator(flux_crd).validate(entry)
        assert entry["spec"]["path"] == f"./trees/{cluster}"
    # Every field the bundled schema lets wasm-gitops write is a field of the real CRD.
    # (Only spec: a CRD's schema never describes ObjectMeta, the API server does.)
    missing = sorted(_fields_outside(bundled, bundled["properties"]["spec"], appset_crd["properties"]["spec"], "spec"))
    assert missing == []
    # And the check can fail: a field the CRD lacks is found.
    bad = json.loads(json.dumps(bundled))
    bad["properties"]["spec"]["properties"]["strategy"]["properties"]["rollingSync"]["properties"]["pause"] = {}
    assert _fields_outside(bad, bad["properties"]["spec"], appset_crd["properties"]["spec"], "spec") == \
        ["spec.strategy.rollingSync.pause"]


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _fields_outside(root: dict[str, Any], ours: dict[str, Any], crd: dict[str, Any], where: str) -> list[str]:
    ours = _resolve(root, ours)
    found: list[str] = []
    for name, sub in ours.get("properties", {}).items():
        theirs = crd.get("properties", {}).get(name)
        path = f"{where}.{name}" if where else name
        if theirs is None:
            found.append(path)
            continue
        found += _fields_outside(root, sub, theirs, path)
    items = ours.get("items")
    if isinstance(items, dict) and isinstance(crd.get("items"), dict):
        found += _fields_outside(root, items, crd["items"], where + "[]")
    extra = ours.get("additionalProperties")
    if isinstance(extra, dict) and isinstance(crd.get("additionalProperties"), dict):
        found += _fields_outside(root, extra, crd["additionalProperties"], where + ".*")
    return found


@pytest.mark.parametrize(("edit", "expected"), [
    (("  - name: prod-west\n", "  - name: prod-east\n"),
     "filters.yaml:32:11: cluster name 'prod-east' is used twice; cluster names must be unique "
     "(each names its directory clusters/<name>/ and its Argo CD Applications)"),
    (("    services: [productpage]\n", "    services: [productpage, detail]\n"),
     "filters.yaml:27:29: unknown service 'detail' in cluster 'canary'; declared: "
     "productpage, reviews"),
    (("    services: [productpage]\n", "    services: [productpage, reveiws]\n"),
     "filters.yaml:27:29: unknown service 'reveiws' in cluster 'canary'; did you mean "
     "'reviews'?"),
    (("    istio: \"1.30.1\"\n", "    istio: \"1.22\"\n"),
     "filters.yaml:34:20: cluster 'prod-west' (Istio 1.22): "
     "TrafficExtension needs Istio 1.30 or later; use output kind WasmPlugin for this cluster or raise its istio"),
    (("    istio: \"1.30\"\n", "    istio: \"1.4\"\n"),
     "filters.yaml:29:12: istio: '1.4' has no Wasm support this tool can render (Wasm filters "
     "arrived in Istio 1.5); target 1.5 or later"),
    (("maxUpdate: {prod: 1}", "maxUpdate: {prd: 1}"),
     "filters.yaml:39:17: no cluster is in wave 'prd'; waves: canary, prod"),
    (("labels: {wave: prod, region: us-west}", "labels: {wave: prod, region: us-east}"),
     "filters.yaml:35:13: cluster 'prod-west' has the same labels as cluster 'prod-east', so "
     "Argo CD would select the same clusters for both; give each cluster a label of its own (e.g. cluster: <name>)"),
])
def test_cluster_mistakes_are_refused_at_their_line(repo: Repo, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in THREE
    repo.write("filters.yaml", THREE.replace(old, new, 1))
    before = repo.tree()
    result = repo.cli("render")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [expected]
    assert repo.tree() == before


def test_a_cluster_without_a_wave_or_with_an_unknown_key_is_refused_by_the_schema(repo: Repo) -> None:
    repo.write("filters.yaml", THREE.replace("labels: {wave: canary, region: eu-west}", "labels: {region: eu-west}")
               .replace("    output: {kind: WasmPlugin}\n", "    outputs: {kind: WasmPlugin}\n"))
    result = repo.cli("validate")
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2, result.output
    assert lines[0].startswith("filters.yaml:26:13: ") and "wave" in lines[0]
    assert lines[1].startswith("filters.yaml:30:5: ") and "outputs" in lines[1]


def test_the_paths_a_fleet_writes_are_owned_and_nothing_near_them(repo: Repo) -> None:
    for rel in render(repo):
        assert owned_shape(rel), rel
    for rel in ("trees/canary/../base/kustomization.yaml", "trees/canary/deployment.yaml",
                "clusters/canary/flux-system.yaml", "clusters/canary/wasm-filters.yml", "trees/Canary/kustomization.yaml",
                "trees/canary/productpage/app/kustomization.yaml", "clusters/wasm-filters.yaml"):
        assert not owned_shape(rel), rel


def test_verify_runs_each_distinct_shape_in_envoy(repo: Repo) -> None:
    from test_verify import first_wins

    from renderer.commands.verify import verify

    repo.write("filters/a.wasm", first_wins("a"))
    repo.write("filters/b.wasm", first_wins("b"))
    spec = (
        'apiVersion: wasm-gitops/v1\nkind: FilterSet\nistio: "1.22"\n'
        "filters:\n  - {name: first-a, wasm: filters/a.wasm}\n  - {name: first-b, wasm: filters/b.wasm}\n"
        "services:\n  - name: productpage\n    deployment: productpage-v1\n    resources: [apps/productpage]\n"
        "    filters: [first-a, first-b]\n"
        "    tests:\n      - {name: a runs first, expect: {requestHeaders: {x-first: a}}}\n"
        "clusters:\n"
        "  - {name: canary, labels: {wave: canary}}\n"
        "  - {name: prod-east, istio: \"1.30\", output: {kind: WasmPlugin}, labels: {wave: prod, region: east}}\n"
        "  - {name: prod-north, istio: \"1.30.2\", output: {kind: WasmPlugin}, labels: {wave: prod, region: north}}\n"
        "  - {name: prod-west, istio: \"1.30\", output: {kind: TrafficExtension}, labels: {wave: prod, region: west}}\n"
    )
    repo.write("filters.yaml", spec)
    results = {r.case.label: r for r in verify(repo.spec).results}
    # One run per tree: prod-north shares prod-east's, so it is not run twice.
    assert sorted(results) == [f"service:productpage@{t}/a runs first" for t in ("canary", "prod-east", "prod-west")]
    for result in results.values():
        assert result.passed, (result.case.label, result.failures)
    # The order is each shape's own: swapped in the spec, every shape fails the same way.
    repo.write("filters.yaml", spec.replace("filters: [first-a, first-b]", "filters: [first-b, first-a]"))
    swapped = {r.case.label: r.failures for r in verify(repo.spec).results}
    assert set(swapped.values()) == {('request header x-first: expected "a", got "b"',)}
    assert len(swapped) == 3


def test_check_and_diff_say_which_clusters_change_in_which_wave(repo: Repo) -> None:
    render(repo)
    assert repo.cli("check").exit_code == 0
    # A filter's priority shapes only the WasmPlugin and TrafficExtension of the 1.30 clusters.
    repo.write("filters.yaml", THREE.replace("    wasm: filters/other-filter.wasm\n",
                                             "    wasm: filters/other-filter.wasm\n    priority: 5\n"))
    check = repo.cli("check")
    assert check.exit_code == 1
    assert "clusters that change: wave prod: prod-east, prod-west (unchanged: canary)\n" in check.output
    as_json = json.loads(repo.cli("check", "--format", "json").output)
    assert [(c["name"], c["wave"], c["changes"]) for c in as_json["clusters"]] == [
        ("canary", "canary", False), ("prod-east", "prod", True), ("prod-west", "prod", True)]
    assert as_json["clusters"][1]["files"] == ["trees/prod-east/productpage/other-filter.wasmplugin.yaml",
                                               "trees/prod-east/reviews/other-filter.wasmplugin.yaml"]
    diff = repo.cli("diff")
    assert diff.output.rstrip().endswith("clusters that change: wave prod: prod-east, prod-west (unchanged: canary)")
    markdown = repo.cli("diff", "--format", "markdown").output
    assert "| canary | <code>canary</code> | <code>trees/canary</code> | no change |" in markdown
    assert "| prod | <code>prod-east</code> | <code>trees/prod-east</code> | 2 files |" in markdown
    folds = [line for line in markdown.splitlines() if line.startswith("<summary>")]
    assert [f.split(":")[0] for f in folds] == ["<summary>tree prod-east (cluster prod-east; wave prod)",
                                                "<summary>tree prod-west (cluster prod-west; wave prod)"]
    # A new binary reaches every cluster that runs a service loading it, through the shared base/.
    repo.write("filters/other-filter.wasm", proxy_wasm_module("other-v2"))
    repo.write("filters.yaml", THREE.replace("    services: [productpage]\n", "    services: [reviews]\n"))
    found = json.loads(repo.cli("check", "--format", "json").output)["clusters"]
    assert all(c["changes"] for c in found)
    assert {"base/bookinfo/other-filter.configmap.yaml", "overlays/reviews/deployment-patch.yaml"} <= \
        set(found[0]["files"])
    # canary no longer runs productpage: productpage's overlay is not among the files it applies.
    assert not any(f.startswith("overlays/productpage/") for f in found[0]["files"])
    assert any(f.startswith("overlays/productpage/") for f in found[1]["files"])


def test_single_target_gitops_settings_are_said_to_have_no_effect_on_a_fleet(repo: Repo) -> None:
    repo.write("filters.yaml", THREE.replace("  argocd:\n", "  argocd:\n    mode: ApplicationSet\n    automated: true\n")
               .replace("  flux: {}", "  flux: {mode: PerService}"))
    result = repo.cli("validate", "--no-envoy")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if ": warning: " in line]
    assert [w.split(": warning: ")[0] for w in warnings] == ["filters.yaml:39:11", "filters.yaml:40:16",
                                                             "filters.yaml:42:16"]
    assert "mode has no effect with clusters: a fleet gets one RollingSync ApplicationSet" in warnings[0]


def test_the_envoy_step_loads_what_each_shape_renders(repo: Repo) -> None:
    from renderer.commands.validate import validate

    cut = THREE.index("\nclusters:\n")
    single = THREE[:cut + 1] + THREE[THREE.index("\ngitops:\n") + 1:].replace(
        "  argocd:\n    maxUpdate: {prod: 1}\n", "  argocd: {}\n")
    same = single.replace("\ngitops:\n", "\nclusters:\n  - {name: a, labels: {wave: one}}\n"
                          "  - {name: b, istio: \"1.22.3\", labels: {wave: two}}\ngitops:\n")
    loaded = {}
    for name, spec in (("single", single), ("same", same), ("three", THREE)):
        repo.write("filters.yaml", spec)
        result = validate(repo.spec)
        assert result.envoy is not None
        loaded[name] = result.envoy.loaded
    # Clusters of the top-level shape load nothing more; WasmPlugin and TrafficExtension on 1.30 do.
    assert loaded["same"] == loaded["single"]
    assert loaded["three"] > loaded["single"]


def test_a_service_no_cluster_runs_is_warned_about_and_not_rendered(repo: Repo) -> None:
    spec = THREE.replace("  - name: prod-east\n    istio: \"1.30\"\n",
                         "  - name: prod-east\n    istio: \"1.30\"\n    services: [productpage]\n").replace(
        "  - name: prod-west\n    istio: \"1.30.1\"\n", "  - name: prod-west\n    istio: \"1.30.1\"\n"
        "    services: [productpage]\n")
    repo.write("filters.yaml", spec)
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    assert "filters.yaml:19:11: warning: service 'reviews' runs in no cluster" in result.output
    assert not any("reviews" in rel or "bookinfo" in rel for rel in repo.outputs())


def test_clusters_dir_is_an_output_only_for_a_fleet(repo: Repo) -> None:
    repo.app("clusters/east/productpage", "productpage-v1", "productpage")
    cut = THREE.index("\nclusters:\n")
    single = (THREE[:cut + 1] + THREE[THREE.index("\ngitops:\n") + 1:].replace(
        "  argocd:\n    maxUpdate: {prod: 1}\n", "  argocd: {}\n")).replace(
        "resources: [apps/productpage]", "resources: [apps/clusters/east/productpage]")
    repo.write("filters.yaml", single)
    assert repo.cli("render").exit_code == 0
    # The same resources under the output's clusters/: fine without clusters, refused with them.
    repo.app("../clusters/east/productpage", "productpage-v1", "productpage")  # apps/../clusters/: the output's
    repo.write("filters.yaml", single.replace("apps/clusters/east/productpage", "clusters/east/productpage"))
    assert repo.cli("validate", "--no-envoy").exit_code == 0
    repo.write("filters.yaml", THREE.replace("resources: [apps/productpage]", "resources: [clusters/east/productpage]"))
    refused = repo.cli("validate", "--no-envoy")
    assert refused.exit_code == 2, refused.output
    assert "filters.yaml:17:17: resource 'clusters/east/productpage' includes clusters/east/productpage, which " \
        "wasm-gitops writes" in refused.output
