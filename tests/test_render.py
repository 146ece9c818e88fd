"""Rendering: golden trees, the real kustomize build of every output, and determinism."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from pathlib import Path

import pytest
import yaml
from conftest import GOLDEN, Repo, assert_golden, kustomize

from renderer.yamlio import dump

GOOD = Path(__file__).parent / "specs" / "good"
def render_case(repo: Repo, name: str) -> dict[str, bytes]:
    repo.write("filters.yaml", (GOOD / f"{name}.yaml").read_text())
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    return repo.outputs()


CASES = sorted(p.stem for p in GOOD.glob("*.yaml"))


@pytest.mark.parametrize("case", CASES)
def test_golden_tree(repo: Repo, case: str) -> None:
    assert_golden(render_case(repo, case), GOLDEN / case)


@pytest.mark.parametrize("case", CASES)
def test_every_output_builds_with_kustomize(repo: Repo, case: str) -> None:
    render_case(repo, case)
    spec = yaml.safe_load(repo.spec.read_text())
    top_kind = (spec.get("output") or {}).get("kind", "EnvoyFilter")
    local = {f["name"] for f in spec["filters"] if not f["wasm"].startswith("oci://")}
    wasm = {n: (repo.root / f["wasm"]).read_bytes() for f in spec["filters"] if (n := f["name"]) in local}

    base = kustomize(repo.root / "base")
    configmaps = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in base}
    assert all(o["kind"] == "ConfigMap" for o in base)

    for service in spec["services"]:
        objs = kustomize(repo.root / "overlays" / service["name"])
        deployments = [o for o in objs if o["kind"] == "Deployment"]
        assert [d["metadata"]["name"] for d in deployments] == [service["deployment"]]
        dep = deployments[0]
        namespace = service.get("namespace", "default")
        assert dep["metadata"]["namespace"] == namespace
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        names = [s if isinstance(s, str) else s["name"] for s in service["filters"]]
        mounted = [n for n in names if n in local]
        if mounted:
            volumes = json.loads(ann["sidecar.istio.io/userVolume"])
            mounts = json.loads(ann["sidecar.istio.io/userVolumeMount"])
            assert mounts == {"wasm-filters": {"mountPath": "/var/local/lib/wasm-filters", "readOnly": True}}
            sources = volumes["wasm-filters"]["projected"]["sources"]
            assert [s["configMap"]["items"][0]["path"] for s in sources] == [f"{n}.wasm" for n in mounted]
            for src, fname in zip(sources, mounted, strict=True):
                cm = configmaps[(namespace, src["configMap"]["name"])]
                key = src["configMap"]["items"][0]["key"]
                assert base64.b64decode(cm["binaryData"][key]) == wasm[fname]
        else:  # only OCI images: nothing to mount, the Deployment is left alone
            assert "sidecar.istio.io/userVolume" not in ann
        if "proxyLogLevel" in service:
            want = ",".join(f"{k}:{v}" for k, v in sorted(service["proxyLogLevel"].items()))
            assert ann["sidecar.istio.io/componentLogLevel"] == want
        # The pods keep their own labels, and every filter object selects them.
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        kind = (service.get("output") or {}).get("kind", top_kind)
        attached = [o for o in objs if o["kind"] in ("EnvoyFilter", "WasmPlugin")]
        assert {o["kind"] for o in attached} == {kind}
        assert [e["metadata"]["name"] for e in attached] == sorted(f"{service['name']}-{n}" for n in names)
        for obj in attached:
            selector = (obj["spec"]["workloadSelector"]["labels"] if kind == "EnvoyFilter"
                        else obj["spec"]["selector"]["matchLabels"])
            assert selector.items() <= pod_labels.items()
            assert obj["metadata"]["namespace"] == namespace

    root = kustomize(repo.root)
    ids = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in root]
    assert len(ids) == len(set(ids)), "an object comes out twice in the root kustomization"
    assert {i for i in ids if i[0] == "ConfigMap"} == {("ConfigMap", ns, n) for ns, n in configmaps}


def test_filter_chain_order_follows_the_list(repo: Repo) -> None:
    render_case(repo, "basic")
    pp = [repo.load(f"overlays/productpage/{n}.envoyfilter.yaml") for n in ("example-filter", "other-filter")]
    assert [e["spec"]["priority"] for e in pp] == [0, 1]
    dt = [repo.load(f"overlays/details/{n}.envoyfilter.yaml") for n in ("other-filter", "example-filter")]
    assert [e["spec"]["priority"] for e in dt] == [0, 1]


def test_config_is_delivered_as_a_json_string_with_override(repo: Repo) -> None:
    render_case(repo, "basic")
    pp = repo.load("overlays/productpage/other-filter.envoyfilter.yaml")
    conf = pp["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["configuration"]
    assert conf == {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": '{"mode":"relaxed"}'}
    dt = repo.load("overlays/details/other-filter.envoyfilter.yaml")
    value = dt["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["configuration"]["value"]
    assert json.loads(value) == {"mode": "strict", "limits": [1, 2], 'quote"d': "line1\nline2: {{ not a template }}"}


def test_legacy_shape_for_istio_1_6(repo: Repo) -> None:
    render_case(repo, "legacy-istio-1.6")
    ef = repo.load("overlays/productpage/example-filter.envoyfilter.yaml")
    patch = ef["spec"]["configPatches"][0]
    assert patch["match"]["listener"]["filterChain"]["filter"] == {
        "name": "envoy.http_connection_manager", "subFilter": {"name": "envoy.router"}}
    cfg = patch["patch"]["value"]["config"]["config"]
    assert cfg["rootId"] == "my_root_id" and cfg["configuration"] == '{"header":"x-demo"}'
    assert "priority" not in ef["spec"] and "typed_config" not in patch["patch"]["value"]


def test_new_binary_new_configmap_name_and_annotation(repo: Repo) -> None:
    render_case(repo, "basic")
    before = repo.load("overlays/details/deployment-patch.yaml")
    repo.write("filters/example-filter.wasm", __import__("conftest").proxy_wasm_module("example-v2"))
    assert repo.cli("render").exit_code == 0
    after = repo.load("overlays/details/deployment-patch.yaml")
    key = "sidecar.istio.io/userVolume"
    a = before["spec"]["template"]["metadata"]["annotations"][key]
    b = after["spec"]["template"]["metadata"]["annotations"][key]
    assert a != b
    digest = hashlib.sha256((repo.root / "filters/example-filter.wasm").read_bytes()).hexdigest()
    assert f"wasm-example-filter-{digest[:10]}" in b
    cm = repo.load("base/default/example-filter.configmap.yaml")
    assert cm["metadata"]["name"] == f"wasm-example-filter-{digest[:10]}"


def test_render_twice_is_byte_identical_and_rewrites_nothing(repo: Repo) -> None:
    first = render_case(repo, "basic")
    mtimes = {p: os.stat(repo.root / p).st_mtime_ns for p in first}
    result = repo.cli("render")
    assert "0 added, 0 changed, 0 removed" in result.output
    assert repo.outputs() == first
    assert {p: os.stat(repo.root / p).st_mtime_ns for p in first} == mtimes


def _shuffle(node: object, rng: random.Random) -> object:
    if isinstance(node, dict):
        items = list(node.items())
        rng.shuffle(items)
        return {k: _shuffle(v, rng) for k, v in items}
    if isinstance(node, list):
        return [_shuffle(v, rng) for v in node]
    return node


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_key_order_of_the_spec_does_not_matter(repo: Repo, tmp_path: Path, seed: int) -> None:
    first = render_case(repo, "basic")
    spec = yaml.safe_load(repo.spec.read_text())
    shuffled = _shuffle(spec, random.Random(seed))
    # Lists keep their order (it means something: the filter chain); services may come in any order.
    random.Random(seed).shuffle(shuffled["services"])  # type: ignore[index]
    repo.write("filters.yaml", dump(shuffled))
    for p in first:
        if not p.startswith("."):
            (repo.root / p).unlink()
    (repo.root / ".wasm-gitops-manifest.json").unlink()
    assert repo.cli("render").exit_code == 0
    assert repo.outputs() == first
