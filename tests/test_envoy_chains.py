"""The chain each sidecar gets, built from the rendered tree as istiod builds it, loaded in a real Envoy."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Repo

from renderer.envoy import istio
from renderer.envoy.binary import find_envoy
from renderer.envoy.process import validate
from renderer.istio_versions import parse_version
from renderer.plan import build_plan
from renderer.spec import load_spec

GOOD = Path(__file__).parent / "specs" / "good"
CASES = sorted(p.stem for p in GOOD.glob("*.yaml"))

Pairs = list[tuple[str, dict[str, Any]]]


def rendered(repo: Repo, case: str) -> tuple[Any, Pairs, dict[str, Any]]:
    text = (GOOD / f"{case}.yaml").read_text()
    repo.write("filters.yaml", text)
    fs = load_spec(repo.spec).filter_set
    plan = build_plan(fs, repo.root, keep_objects=True)
    assert not plan.problems
    return fs, plan.objects, yaml.safe_load(text)


def local_services(spec: dict[str, Any]) -> list[dict[str, Any]]:
    remote = {f["name"] for f in spec["filters"] if f["wasm"].startswith("oci://")}
    return [s for s in spec["services"] if not {_name(x) for x in s["filters"]} & remote]


def _name(entry: Any) -> str:
    return entry if isinstance(entry, str) else entry["name"]


def expected_order(spec: dict[str, Any], service: dict[str, Any]) -> list[str]:
    """What the renderer promises: list order where priorities exist (Istio 1.11+, WasmPlugin);
    before 1.11 every EnvoyFilter has priority 0 and istiod falls back to the object names."""
    names = [f"{service['name']}-{_name(x)}" for x in service["filters"]]
    wasmplugin = (spec.get("output") or {}).get("kind") == "WasmPlugin"
    version = parse_version(str(spec["istio"]))
    assert version is not None
    if not wasmplugin and version < (1, 11):
        names.sort()
    return names


@pytest.mark.parametrize("case", CASES)
def test_chains_of_the_golden_specs_follow_istiod_and_load_in_envoy(repo: Repo, case: str, tmp_path: Path) -> None:
    fs, pairs, spec = rendered(repo, case)
    services = local_services(spec)
    chains = istio.filter_set_chains(fs, pairs, tmp_path, only={s["name"] for s in services})
    assert [c.service for c in chains] == sorted(s["name"] for s in services)
    by_name = {c.service: c for c in chains}
    wasm = {f["name"]: (repo.root / f["wasm"]).read_bytes() for f in spec["filters"]
            if not f["wasm"].startswith("oci://")}
    for service in services:
        chain = by_name[service["name"]]
        assert chain.context == service.get("context", "SIDECAR_INBOUND")
        assert [f.object_name.split("/", 1)[1] for f in chain.filters] == expected_order(spec, service)
        for f in chain.filters:
            filter_name = f.object_name.split("/", 1)[1][len(service["name"]) + 1:]
            local = f.plugin["vm_config"]["code"]["local"]["filename"]
            assert Path(local).read_bytes() == wasm[filter_name], "the module is not the rendered binary"
            assert f.module_path == f"/var/local/lib/wasm-filters/{filter_name}.wasm"
    if chains:
        result = validate(find_envoy(), istio.chain_bootstrap(chains), tmp_path)
        assert result.ok, result.log


def test_plugin_config_per_service_and_envoyfilter_shape(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "basic")
    chains = {c.service: c for c in istio.filter_set_chains(fs, pairs, tmp_path)}
    other = chains["productpage"].filters[1].plugin
    assert other["configuration"] == {"@type": istio.STRING_VALUE, "value": '{"mode":"relaxed"}'}
    assert other["vm_config"]["vm_id"] == "shared-vm" and other["fail_open"] is True
    assert chains["productpage"].filters[0].plugin["root_id"] == "my_root_id"
    assert all(f.http_filter["name"] == "envoy.filters.http.wasm" for c in chains.values() for f in c.filters)


def test_wasmplugin_translated_as_istiod_does(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "wasmplugin-istio-1.12")
    (chain,) = istio.filter_set_chains(fs, pairs, tmp_path)
    (f,) = chain.filters
    assert f.kind == "WasmPlugin"
    assert f.http_filter["name"] == "extenstions.istio.io/wasmplugin/default.productpage-example-filter"
    assert f.plugin["name"] == "default.productpage-example-filter"
    assert f.plugin["root_id"] == "my_root_id"
    assert f.plugin["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert "vm_id" not in f.plugin["vm_config"]
    assert "fail_open" not in f.plugin and "failure_policy" not in f.plugin


@pytest.mark.parametrize("version,filter_name,plugin_name,failure", [
    ((1, 22), "extenstions.istio.io/wasmplugin/default.productpage-example-filter",
     "default.productpage-example-filter", ("fail_open", True)),
    ((1, 26), "extensions.istio.io/wasmplugin/default.productpage-example-filter",
     "default.productpage-example-filter", ("failure_policy", "FAIL_OPEN")),
    ((1, 30), "extensions.istio.io/trafficextension/default.productpage-example-filter~istio-translated-wasmplugin",
     "default.productpage-example-filter~istio-translated-wasmplugin", ("failure_policy", "FAIL_OPEN")),
])
def test_wasmplugin_names_and_fail_strategy_per_release(repo: Repo, tmp_path: Path, version: tuple[int, int],
                                                        filter_name: str, plugin_name: str,
                                                        failure: tuple[str, Any]) -> None:
    fs, pairs, _ = rendered(repo, "wasmplugin-istio-1.12")
    opened = copy.deepcopy(pairs)
    for _, obj in opened:
        if obj["kind"] == "WasmPlugin":
            obj["spec"]["failStrategy"] = "FAIL_OPEN"
    (chain,) = istio.service_chains(opened, {}, tmp_path, istio=version)
    (f,) = chain.filters
    assert (f.http_filter["name"], f.plugin["name"]) == (filter_name, plugin_name)
    assert {k: v for k, v in f.plugin.items() if k in ("fail_open", "failure_policy")} == dict([failure])
    result = validate(find_envoy(), istio.chain_bootstrap([chain]), tmp_path)
    assert result.ok, result.log


def test_wasmplugin_phase_then_descending_priority(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "wasmplugin-istio-1.12")
    (path, plugin), = [(p, o) for p, o in pairs if o["kind"] == "WasmPlugin"]
    variants = []
    for name, phase, priority in [("a-stats", "STATS", 100), ("b-authn-low", "AUTHN", 1), ("c-none", None, 1000),
                                  ("d-authn-high", "AUTHN", 5), ("e-authz", "AUTHZ", None), ("f-authn-unset", "AUTHN", None)]:
        obj = copy.deepcopy(plugin)
        obj["metadata"]["name"] = name
        obj["spec"].pop("phase", None)
        obj["spec"].pop("priority", None)
        if phase:
            obj["spec"]["phase"] = phase
        if priority is not None:
            obj["spec"]["priority"] = priority
        variants.append((path.replace("example-filter", name), obj))
    others = [(p, o) for p, o in pairs if o["kind"] != "WasmPlugin"]
    (chain,) = istio.filter_set_chains(fs, others + variants, tmp_path)
    assert [f.object_name.split("/")[1] for f in chain.filters] == \
        ["d-authn-high", "b-authn-low", "f-authn-unset", "e-authz", "a-stats", "c-none"]


def test_wasmplugin_match_mode_selects_the_listener_class(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "wasmplugin-istio-1.16")
    outbound = istio.service_chains(pairs, {"reviews": "SIDECAR_OUTBOUND"}, tmp_path, only={"reviews"})
    inbound = istio.service_chains(pairs, {"reviews": "SIDECAR_INBOUND"}, tmp_path, only={"reviews"})
    assert len(outbound[0].filters) == 1 and inbound[0].filters == ()


def test_legacy_and_typed_struct_shapes_are_translated(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "legacy-istio-1.6")
    legacy = istio.filter_set_chains(fs, pairs, tmp_path)[0].filters[0]
    assert "1.5/1.6" in legacy.translated
    assert legacy.plugin["root_id"] == "my_root_id" and "vm_config" in legacy.plugin
    assert legacy.http_filter["typed_config"]["@type"] == istio.WASM_TYPE
    fs, pairs, _ = rendered(repo, "typed-struct-istio-1.7")
    struct = istio.filter_set_chains(fs, pairs, tmp_path)[0].filters[0]
    # Envoy 1.40 still reads the udpa TypedStruct: it stays, only the module path is local.
    assert struct.translated == "" and struct.http_filter["typed_config"]["@type"] == istio.TYPED_STRUCTS[0]
    assert struct.http_filter["typed_config"]["type_url"] == istio.WASM_TYPE
    assert Path(struct.plugin["vm_config"]["code"]["local"]["filename"]).is_file()


def test_order_comes_from_the_objects_priority(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "basic")
    swapped = copy.deepcopy(pairs)
    for path, obj in swapped:
        if path.startswith("overlays/details/") and obj["kind"] == "EnvoyFilter":
            obj["spec"]["priority"] = 1 - obj["spec"]["priority"]
    before = {c.service: c for c in istio.filter_set_chains(fs, pairs, tmp_path)}["details"]
    after = {c.service: c for c in istio.filter_set_chains(fs, swapped, tmp_path)}["details"]
    assert [f.object_name for f in after.filters] == [f.object_name for f in reversed(before.filters)]


def _patch_annotation(pairs: Pairs, service: str, key: str, edit: Any) -> Pairs:
    out = copy.deepcopy(pairs)
    for path, obj in out:
        if path == f"overlays/{service}/deployment-patch.yaml":
            ann = obj["spec"]["template"]["metadata"]["annotations"]
            ann[key] = json.dumps(edit(json.loads(ann[key])))
    return out


def test_wrong_mount_path_fails_clearly(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "basic")
    moved = _patch_annotation(pairs, "details", istio.USER_VOLUME_MOUNT,
                              lambda m: {k: {**v, "mountPath": "/etc/wasm"} for k, v in m.items()})
    with pytest.raises(istio.ChainError, match=r"overlays/details/.*loads /var/local/lib/wasm-filters/"
                                                r"\S+\.wasm, which the pod's sidecar.istio.io/userVolumeMount "
                                                r"does not mount \(mounted: /etc/wasm/"):
        istio.filter_set_chains(fs, moved, tmp_path)


def test_stale_or_missing_configmap_fails_clearly(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "basic")

    def stale(volumes: dict[str, Any]) -> dict[str, Any]:
        volumes["wasm-filters"]["projected"]["sources"][0]["configMap"]["name"] = "wasm-other-filter-0000000000"
        return volumes

    with pytest.raises(istio.ChainError, match=r"mounts ConfigMap 'wasm-other-filter-0000000000', which the tree "
                                                r"does not have in namespace 'default'.*pod would not start"):
        istio.filter_set_chains(fs, _patch_annotation(pairs, "details", istio.USER_VOLUME, stale), tmp_path)
    without = [(p, o) for p, o in pairs if not p.endswith("other-filter.configmap.yaml")]
    with pytest.raises(istio.ChainError, match="mounts ConfigMap 'wasm-other-filter-"):
        istio.filter_set_chains(fs, without, tmp_path)


def test_wrong_configmap_key_and_bytes(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "basic")
    renamed = copy.deepcopy(pairs)
    for path, obj in renamed:
        if obj["kind"] == "ConfigMap" and "example-filter" in path:
            obj["binaryData"] = {"renamed.wasm": obj["binaryData"]["example-filter.wasm"]}
    with pytest.raises(istio.ChainError, match="has no binaryData key 'example-filter.wasm'"):
        istio.filter_set_chains(fs, renamed, tmp_path)
    # The module comes from the ConfigMap, not from the spec's file: other bytes there, other module.
    changed = copy.deepcopy(pairs)
    for _, obj in changed:
        if obj["kind"] == "ConfigMap" and "example-filter.wasm" in obj.get("binaryData", {}):
            obj["binaryData"]["example-filter.wasm"] = base64.b64encode(b"\0asm not really").decode()
    chains = istio.filter_set_chains(fs, changed, tmp_path)
    loaded = [Path(f.plugin["vm_config"]["code"]["local"]["filename"]).read_bytes()
              for c in chains for f in c.filters if "example-filter" in f.object_name]
    assert loaded and all(b == b"\0asm not really" for b in loaded)
    refused = validate(find_envoy(), istio.chain_bootstrap(chains), tmp_path)
    assert not refused.ok and "Unable to create Wasm plugin" in refused.log


def test_patch_that_matches_no_filter_fails_clearly(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "basic")
    broken = copy.deepcopy(pairs)
    for path, obj in broken:
        if path == "overlays/details/example-filter.envoyfilter.yaml":
            sub = obj["spec"]["configPatches"][0]["match"]["listener"]["filterChain"]["filter"]["subFilter"]
            sub["name"] = "envoy.filters.http.not_there"
    with pytest.raises(istio.ChainError, match=r"example-filter.envoyfilter.yaml \(EnvoyFilter default/details-"
                                                r"example-filter\): INSERT_BEFORE 'envoy.filters.http.not_there'"):
        istio.filter_set_chains(fs, broken, tmp_path)


def test_http_filter_for_one_configuration_is_what_the_rendered_object_gives(repo: Repo, tmp_path: Path) -> None:
    for case, service, index in [("basic", "productpage", 1), ("wasmplugin-istio-1.12", "productpage", 0),
                                 ("legacy-istio-1.6", "productpage", 0), ("typed-struct-istio-1.7", "details", 0)]:
        fs, pairs, _ = rendered(repo, case)
        chain = {c.service: c for c in istio.filter_set_chains(fs, pairs, tmp_path)}[service]
        svc = next(s for s in fs.services if s.name == service)
        sf = svc.filters[index]
        got = istio.http_filter(fs, sf.filter, sf.config, tmp_path, output=svc.output, context=svc.context)
        want = copy.deepcopy(chain.filters[index].http_filter)
        if svc.output == "WasmPlugin":  # the object's name is the only difference: a different service
            object_name = f"{svc.namespace}.{svc.name}-{sf.filter.name}"
            assert want["typed_config"]["config"]["name"] == object_name
            want["typed_config"]["config"]["name"] = f"default.validate-{sf.filter.name}"
            want["name"] = want["name"].replace(object_name, f"default.validate-{sf.filter.name}")
        assert got == want, case


@pytest.mark.parametrize("context,server,remote", [("SIDECAR_INBOUND", "istio-envoy", False),
                                                   ("SIDECAR_OUTBOUND", None, False), ("GATEWAY", "istio-envoy", True)])
def test_listener_shape_per_context(context: str, server: str | None, remote: bool, tmp_path: Path) -> None:
    lst = istio.listener("l", context, [], "up")  # type: ignore[arg-type]
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm.get("server_name") == server and hcm["use_remote_address"] is remote
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    assert lst["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}
    result = validate(find_envoy(), istio.bootstrap([lst], [istio.cluster("up", 9)]), tmp_path)
    assert result.ok, result.log


def _with_operation(pairs: Pairs, operation: str, sub: str | None) -> Pairs:
    out = copy.deepcopy(pairs)
    for path, obj in out:
        if path == "overlays/details/example-filter.envoyfilter.yaml":
            patch = obj["spec"]["configPatches"][0]
            patch["patch"]["operation"] = operation
            network = patch["match"]["listener"]["filterChain"]["filter"]
            if sub is None:
                network.pop("subFilter")
            else:
                network["subFilter"]["name"] = sub
    return out


@pytest.mark.parametrize("operation,sub,position", [("INSERT_FIRST", None, 0), ("INSERT_BEFORE", None, 0),
                                                     ("INSERT_AFTER", "envoy.filters.http.wasm", 1)])
def test_other_insert_operations_place_the_filter_as_istiod_does(repo: Repo, tmp_path: Path, operation: str,
                                                                 sub: str | None, position: int) -> None:
    fs, pairs, _ = rendered(repo, "basic")
    chains = {c.service: c for c in istio.filter_set_chains(fs, _with_operation(pairs, operation, sub), tmp_path)}
    names = [f.object_name for f in chains["details"].filters]
    assert names.index("default/details-example-filter") == position, names


@pytest.mark.parametrize("operation,sub", [("ADD", None), ("INSERT_AFTER", None),
                                           ("INSERT_AFTER", "envoy.filters.http.router")])
def test_a_filter_after_the_router_fails_clearly(repo: Repo, tmp_path: Path, operation: str, sub: str | None) -> None:
    fs, pairs, _ = rendered(repo, "basic")
    with pytest.raises(istio.ChainError, match=r"example-filter.envoyfilter.yaml \(EnvoyFilter default/details-"
                                                r"example-filter\): the patch puts the filter after the router"):
        istio.filter_set_chains(fs, _with_operation(pairs, operation, sub), tmp_path)


def _rename_matches(pairs: Pairs, hcm: str, router: str) -> Pairs:
    out = copy.deepcopy(pairs)
    for _, obj in out:
        if obj["kind"] == "EnvoyFilter":
            network = obj["spec"]["configPatches"][0]["match"]["listener"]["filterChain"]["filter"]
            network["name"], network["subFilter"]["name"] = hcm, router
    return out


def test_matched_filter_names_as_the_target_release_knows_them(repo: Repo, tmp_path: Path) -> None:
    fs, pairs, _ = rendered(repo, "basic")  # Istio 1.22: the deprecated names are no longer matched
    legacy = _rename_matches(pairs, "envoy.filters.network.http_connection_manager", "envoy.router")
    with pytest.raises(istio.ChainError, match=r"INSERT_BEFORE 'envoy.router', which is not in the SIDECAR_INBOUND "
                                                r"chain of Istio 1.22"):
        istio.filter_set_chains(fs, legacy, tmp_path)
    with pytest.raises(istio.ChainError, match=r"network filter 'envoy.http_connection_manager', which is not the "
                                                r"HTTP connection manager's name in Istio 1.22"):
        istio.filter_set_chains(fs, _rename_matches(pairs, "envoy.http_connection_manager", "envoy.filters.http.router"),
                                tmp_path)
    fs, pairs, _ = rendered(repo, "contexts-and-logs")  # Istio 1.9: the alias table matches both
    assert istio.filter_set_chains(fs, _rename_matches(pairs, "envoy.http_connection_manager", "envoy.router"),
                                   tmp_path)
    fs, pairs, _ = rendered(repo, "legacy-istio-1.6")  # Istio 1.6 generated only the deprecated names
    canonical = _rename_matches(pairs, "envoy.filters.network.http_connection_manager", "envoy.filters.http.router")
    with pytest.raises(istio.ChainError, match="not the HTTP connection manager's name in Istio 1.6"):
        istio.filter_set_chains(fs, canonical, tmp_path)
