"""Gateways: a Higress gateway's filters render as extensions.higress.io WasmPlugins whose defaultConfig
and matchRules were each checked against the filter's configuration schema, valid against our bundled
schema and Higress's own CRD, built by the real kustomize, labelled in diff like Istio's WasmPlugins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REPO, SHARED, Repo, kustomize
from jsonschema import Draft7Validator, Draft202012Validator

HIGRESS_CRD = SHARED / "crds" / "higress-wasmplugin.v1alpha1.schema.json"
OURS = REPO / "schemas" / "higress-wasmplugin.schema.json"
DIGEST = "0123456789abcdef" * 4
IMAGE = f"oci://registry.example.com/filters/example-filter@sha256:{DIGEST}"
needs_crd = pytest.mark.skipif(not HIGRESS_CRD.exists(), reason=f"{HIGRESS_CRD} is missing")

SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"header": {"type": "string", "minLength": 1}, "value": {"type": "string"}}}


def spec(gateway: str, services: str = "") -> str:
    return f"""apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "1.22"
filters:
  - name: example-filter
    wasm: {IMAGE}
    sha256: {DIGEST}
    rootId: my_root_id
    configSchema: filters/example.schema.json
    config: {{header: x-edge, value: default}}
  - name: other-filter
    wasm: filters/other-filter.wasm
{services}gateways:
{gateway}"""


TWO_DOMAINS = """  - name: edge
    controlPlane: higress
    filters:
      - name: example-filter
        rules:
          - domain: [api.example.com]
            config: {value: api}
          - {domain: ["*.shop.example.com"], ingress: [shop/storefront], config: {header: x-shop, value: shop}}
"""


@pytest.fixture
def edge(repo: Repo) -> Repo:
    repo.write("filters/example.schema.json", json.dumps(SCHEMA))
    repo.write("filters.yaml", spec(TWO_DOMAINS))
    return repo


def _plugins(repo: Repo) -> Iterator[dict[str, Any]]:
    for obj in kustomize(repo.root):
        if obj["apiVersion"] == "extensions.higress.io/v1alpha1":
            yield obj


def test_a_higress_gateway_with_two_domains_of_different_config(edge: Repo) -> None:
    result = edge.cli("render")
    assert result.exit_code == 0, result.output
    assert edge.load("kustomization.yaml")["resources"] == ["base", "overlays/edge"]
    (plugin,) = _plugins(edge)
    assert plugin["metadata"]["name"] == "edge-example-filter"
    assert plugin["metadata"]["namespace"] == "higress-system"
    assert plugin["spec"] == {
        "url": IMAGE, "sha256": DIGEST, "pluginName": "my_root_id", "priority": 1, "failStrategy": "FAIL_CLOSE",
        "defaultConfig": {"header": "x-edge", "value": "default"},
        "matchRules": [
            {"domain": ["api.example.com"], "config": {"value": "api"}},
            {"domain": ["*.shop.example.com"], "ingress": ["shop/storefront"],
             "config": {"header": "x-shop", "value": "shop"}},
        ]}
    assert edge.cli("check").exit_code == 0


def test_the_gateway_chain_counts_down_and_only_rules_can_apply(edge: Repo) -> None:
    edge.write("filters/second.wasm", b"")  # never read: the second filter is an image too
    text = spec("""  - name: edge
    controlPlane: higress
    namespace: gateways
    filters:
      - example-filter
      - name: example-filter-2
        global: false
        rules: [{service: [backend.shop.svc.cluster.local], config: {header: x-only-here}}]
""").replace("  - name: other-filter\n    wasm: filters/other-filter.wasm\n",
             f"  - name: example-filter-2\n    wasm: {IMAGE}\n    sha256: {DIGEST}\n    failOpen: true\n"
             "    configSchema: filters/example.schema.json\n")
    edge.write("filters.yaml", text)
    result = edge.cli("render")
    assert result.exit_code == 0, result.output
    plugins = {p["metadata"]["name"]: p for p in _plugins(edge)}
    first, second = plugins["edge-example-filter"]["spec"], plugins["edge-example-filter-2"]["spec"]
    assert (first["priority"], second["priority"]) == (2, 1)
    assert first["defaultConfig"] == {"header": "x-edge", "value": "default"}
    assert second["defaultConfigDisable"] is True and "defaultConfig" not in second
    assert second["failStrategy"] == "FAIL_OPEN"
    assert second["matchRules"] == [{"service": ["backend.shop.svc.cluster.local"], "config": {"header": "x-only-here"}}]
    assert {p["metadata"]["namespace"] for p in plugins.values()} == {"gateways"}


@needs_crd
def test_what_is_rendered_is_valid_for_the_higress_crd(edge: Repo) -> None:
    assert edge.cli("render").exit_code == 0
    crd = Draft7Validator(json.loads(HIGRESS_CRD.read_text(encoding="utf-8")))
    (plugin,) = _plugins(edge)
    assert [e.message for e in crd.iter_errors(plugin)] == []
    # The cross-check sees the spec: a wrong enum value fails in the CRD too.
    broken = {**plugin, "spec": {**plugin["spec"], "failStrategy": "FAIL_SOMETIMES"}}
    assert [e.message for e in crd.iter_errors(broken)]


def _spec_properties(schema: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema["properties"]["spec"]["properties"]
    return props


@needs_crd
def test_our_schema_is_the_higress_crd_or_stricter() -> None:
    ours = json.loads(OURS.read_text(encoding="utf-8"))
    theirs = json.loads(HIGRESS_CRD.read_text(encoding="utf-8"))
    mine, crd = _spec_properties(ours), _spec_properties(theirs)
    assert set(mine) <= set(crd), set(mine) - set(crd)
    # Left out on purpose: pluginConfig (Higress uses defaultConfig), verificationKey (not implemented),
    # vmConfig (nothing to set), pluginName is kept.
    assert set(crd) - set(mine) == {"pluginConfig", "verificationKey", "vmConfig"}
    for key, prop in mine.items():
        if "enum" in prop:
            assert set(prop["enum"]) <= set(crd[key]["enum"]), key
        if "type" in prop and "type" in crd[key]:
            assert prop["type"] == crd[key]["type"], key
    rule, crd_rule = mine["matchRules"]["items"]["properties"], crd["matchRules"]["items"]["properties"]
    assert set(rule) == set(crd_rule)
    assert set(rule["routeType"]["enum"]) == set(crd_rule["routeType"]["enum"])
    Draft202012Validator.check_schema(ours)


def test_rule_configurations_are_checked_each_at_its_line(edge: Repo) -> None:
    edge.write("filters.yaml", spec("""  - name: edge
    controlPlane: higress
    filters:
      - name: example-filter
        config: {header: ""}
        rules:
          - domain: [api.example.com]
            config: {valeu: api}
          - domain: [shop.example.com]
            config: [not, a, map]
          - ingress: [shop/storefront]
            config: {header: 7}
"""))
    before = edge.tree()
    result = edge.cli("render")
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "filters.yaml:18:26: gateways[0].filters[0].config: at $.header: \"\" should be non-empty "
        "(filters/example.schema.json, /properties/header/minLength); make the configuration match the filter's schema",
        "filters.yaml:21:22: gateways[0].filters[0].rules[0].config: at $.valeu: unknown key 'valeu' "
        "(filters/example.schema.json, /additionalProperties); did you mean 'value'?",
        "filters.yaml:23:21: a Higress match rule's config is a map; write it as a map",
        "filters.yaml:25:30: gateways[0].filters[0].rules[2].config: at $.header: 7 is not of type 'string' "
        "(filters/example.schema.json, /properties/header/type); make the configuration match the filter's schema",
    ]
    assert edge.tree() == before


@pytest.mark.parametrize(("gateway", "message"), [
    ("  - {name: edge, controlPlane: higress, filters: [other-filter]}\n",
     "filters.yaml:16:51: filter 'other-filter' is not delivered as an image, and a Higress gateway pulls its "
     "modules from a registry"),
    ("  - {name: edge, controlPlane: higress, filters: [{name: example-filter, rules: [{config: {}}]}]}\n",
     "filters.yaml:16:82: gateways[0].filters[0].rules[0]: a rule needs domain, ingress or service"),
    ("  - {name: edge, controlPlane: higress, filters: [{name: example-filter, global: false}]}\n",
     "filters.yaml:16:82: global: false runs the filter only where a rule matches, and there are no rules"),
    ("  - {name: edge, controlPlane: envoy, filters: [example-filter]}\n",
     "filters.yaml:16:32: gateways[0].controlPlane: 'envoy' is not allowed; use one of: higress, istio, envoy-gateway"),
    ("  - {name: productpage, controlPlane: higress, filters: [example-filter]}\n",
     "filters.yaml:16:12: gateway name 'productpage' is also a service's name, and both would be "
     "overlays/productpage/; rename one"),
    ("  - {name: edge, controlPlane: higress, filters: [example-filter, example-filter]}\n",
     "filters.yaml:16:67: filter 'example-filter' is listed twice for this gateway; list it once"),
])
def test_what_a_gateway_cannot_say_is_refused(edge: Repo, gateway: str, message: str) -> None:
    edge.write("filters.yaml", spec(gateway, services="services:\n  - {name: productpage, deployment: productpage-v1, "
                                    "resources: [apps/productpage], filters: [other-filter]}\n"))
    result = edge.cli("validate")
    assert result.exit_code == 2
    assert result.output.startswith(message), result.output


def test_diff_labels_a_rule_change_hot_and_a_new_gateway_a_listener_drain(edge: Repo) -> None:
    assert edge.cli("render").exit_code == 0
    edge.write("filters.yaml", spec(TWO_DOMAINS.replace("config: {value: api}", "config: {value: api-v2}")))
    result = edge.cli("diff")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == ("~ WasmPlugin higress-system/edge-example-filter  "
                                             "(overlays/edge/example-filter.higress-wasmplugin.yaml); hot")
    edge.write("filters.yaml", spec(TWO_DOMAINS + TWO_DOMAINS.replace("name: edge", "name: edge-2")))
    result = edge.cli("diff")
    assert ("+ WasmPlugin higress-system/edge-2-example-filter  "
            "(overlays/edge-2/example-filter.higress-wasmplugin.yaml); listener drains") in result.stdout.splitlines()


def test_flux_per_overlay_kustomizations_include_the_gateway(edge: Repo) -> None:
    text = spec(TWO_DOMAINS).replace("gateways:\n", "gitops:\n  flux: {mode: PerService}\ngateways:\n")
    edge.write("filters.yaml", text)
    result = edge.cli("render")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (edge.root / "gitops" / "flux").iterdir())
    assert any("edge" in n for n in names), names
    documents = [edge.load(f"gitops/flux/{n}") for n in names]
    paths = {d["spec"]["path"] for d in documents if isinstance(d, dict) and d.get("kind") == "Kustomization"}
    assert "./overlays/edge" in paths, paths


def test_a_removed_gateway_leaves_no_file_behind(edge: Repo) -> None:
    assert edge.cli("render").exit_code == 0
    plugin = edge.root / "overlays" / "edge" / "example-filter.higress-wasmplugin.yaml"
    assert plugin.is_file()
    edge.write("filters.yaml", spec(TWO_DOMAINS).split("gateways:\n")[0])
    result = edge.cli("render")
    assert result.exit_code == 0, result.output
    assert not plugin.exists() and not (edge.root / "overlays" / "edge").exists()
    assert edge.load("kustomization.yaml")["resources"] == ["base"]
