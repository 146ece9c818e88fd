"""Istio ingress gateways and Envoy Gateway: what each control plane is given for a filter scoped by
domain or HTTPRoute, valid against our bundled schemas and the real CRDs, built by the real kustomize."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import REPO, SHARED, Repo, kustomize
from jsonschema import Draft7Validator, Draft202012Validator

DIGEST = "0123456789abcdef" * 4
IMAGE = f"registry.example.com/filters/example-filter@sha256:{DIGEST}"
SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"header": {"type": "string", "minLength": 1}, "value": {"type": "string"}}}
EG_CRD = SHARED / "crds" / "envoygateway-envoyextensionpolicy.v1alpha1.schema.json"
EG_OURS = REPO / "schemas" / "envoygateway-envoyextensionpolicy.schema.json"
ISTIO_CRDS = SHARED / "istio-crds"
needs_crds = pytest.mark.skipif(not EG_CRD.exists() or not ISTIO_CRDS.exists(), reason="../shared CRDs are missing")


def spec(gateways: str, istio: str = "1.22") -> str:
    return f"""apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "{istio}"
filters:
  - name: example-filter
    wasm: oci://{IMAGE}
    sha256: {DIGEST}
    rootId: my_root_id
    configSchema: filters/example.schema.json
    config: {{header: x-edge, value: default}}
gateways:
{gateways}"""


INGRESS = """  - name: ingress
    controlPlane: istio
    filters:
      - name: example-filter
        rules:
          - domain: [api.example.com]
            config: {value: api}
          - {domain: ["*.shop.example.com", shop.example.com], config: {value: shop}}
"""
EDGE = """  - name: eg
    controlPlane: envoy-gateway
    namespace: web
    gatewayRef: public
    httpRoutes:
      - {name: storefront, hostnames: [shop.example.com], pathPrefix: /shop}
      - {name: api, hostnames: [api.example.com]}
    filters:
      - name: example-filter
        rules:
          - {httpRoute: [storefront], config: {value: shop}}
"""


@pytest.fixture
def planes(repo: Repo) -> Repo:
    repo.write("filters/example.schema.json", json.dumps(SCHEMA))
    repo.write("filters.yaml", spec(INGRESS + EDGE))
    return repo


def _built(repo: Repo) -> Iterator[dict[str, Any]]:
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    yield from kustomize(repo.root)


def _by_kind(objs: Iterator[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for obj in objs:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def test_an_istio_gateway_scopes_each_rule_to_its_virtual_hosts(planes: Repo) -> None:
    (ef,) = _by_kind(_built(planes))["EnvoyFilter"]
    assert ef["metadata"]["namespace"] == "istio-system"
    assert ef["spec"]["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    patches = ef["spec"]["configPatches"]
    base = "istio-system.ingress-example-filter"
    extensions = {p["patch"]["value"]["name"]: p["patch"]["value"]["typed_config"]["config"]
                  for p in patches if p["applyTo"] == "EXTENSION_CONFIG"}
    assert {n: json.loads(c["configuration"]["value"]) for n, c in extensions.items()} == {
        base: {"header": "x-edge", "value": "default"}, f"{base}-rule-0": {"value": "api"},
        f"{base}-rule-1": {"value": "shop"}}
    remote = extensions[base]["vm_config"]["code"]["remote"]
    assert remote == {"http_uri": {"uri": f"oci://{IMAGE}", "cluster": "_", "timeout": "30s"}, "sha256": DIGEST}
    chain = [(p["patch"]["value"]["name"], p["patch"]["value"].get("disabled", False))
             for p in patches if p["applyTo"] == "HTTP_FILTER"]
    assert chain == [(base, False), (f"{base}-rule-0", True), (f"{base}-rule-1", True)]
    assert all(p["match"]["context"] == "GATEWAY" for p in patches if "match" in p)
    vhosts = {p["match"]["routeConfiguration"]["vhost"]["name"]: p["patch"]["value"]["typed_per_filter_config"]
              for p in patches if p["applyTo"] == "VIRTUAL_HOST"}
    assert sorted(vhosts) == ["*.shop.example.com:80", "api.example.com:80", "shop.example.com:80"]
    on, off = vhosts["api.example.com:80"][f"{base}-rule-0"], vhosts["api.example.com:80"][base]
    assert on == {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}
    assert off == {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    assert set(vhosts["shop.example.com:80"]) == {base, f"{base}-rule-1"}


def test_a_named_route_rule_wins_only_where_no_earlier_domain_rule_does(planes: Repo) -> None:
    planes.write("filters.yaml", spec("""  - name: ingress
    controlPlane: istio
    httpRoutes:
      - {name: checkout, hostnames: [www.example.com, api.example.com], pathPrefix: /checkout}
      - {name: cart, hostnames: [shop.example.com]}
    filters:
      - name: example-filter
        rules:
          - {domain: [api.example.com], config: {value: api}}
          - {httpRoute: [checkout, cart], config: {value: checkout}}
          - {domain: [shop.example.com], config: {value: shop}}
"""))
    (ef,) = _by_kind(_built(planes))["EnvoyFilter"]
    base = "istio-system.ingress-example-filter"
    routes = {(p["match"]["routeConfiguration"]["vhost"]["name"], p["match"]["routeConfiguration"]["vhost"]["route"]["name"]):
              {n: "disabled" in s for n, s in p["patch"]["value"]["typed_per_filter_config"].items()}
              for p in ef["spec"]["configPatches"] if p["applyTo"] == "HTTP_ROUTE"}
    # api.example.com is rule 0's everywhere, its checkout route included: no route patch there.
    assert routes == {
        ("www.example.com:80", "checkout"): {f"{base}-rule-1": False, base: True},
        # shop.example.com's virtual host enables rule 2, which comes later: the route switches it off.
        ("shop.example.com:80", "cart"): {f"{base}-rule-1": False, base: True, f"{base}-rule-2": True}}


def test_an_istio_gateway_without_rules_gets_a_wasm_plugin_attached_by_target_ref(planes: Repo) -> None:
    planes.write("filters.yaml", spec("""  - name: ingress
    controlPlane: istio
    gatewayRef: public
    filters: [example-filter]
"""))
    (plugin,) = _by_kind(_built(planes))["WasmPlugin"]
    assert plugin["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]
    assert "selector" not in plugin["spec"]
    assert plugin["spec"]["url"] == f"oci://{IMAGE}" and plugin["spec"]["pluginConfig"]["value"] == "default"
    # Before targetRefs (Istio 1.22) the pods of a Gateway API gateway are found by the label Istio gives them.
    planes.write("filters.yaml", spec("""  - name: ingress
    controlPlane: istio
    gatewayRef: public
    filters: [example-filter]
""", istio="1.21"))
    (plugin,) = _by_kind(_built(planes))["WasmPlugin"]
    assert plugin["spec"]["selector"] == {"matchLabels": {"gateway.networking.k8s.io/gateway-name": "public"}}


@needs_crds
def test_an_istio_gateway_follows_the_spec_to_traffic_extensions(planes: Repo) -> None:
    gateway = """  - name: ingress
    controlPlane: istio
    gatewayRef: public
    filters: [example-filter]
"""
    planes.write("filters.yaml", spec(gateway, istio="1.30").replace("filters:\n", "output: {kind: TrafficExtension}\n"
                                                                    "filters:\n", 1))
    (ext,) = _by_kind(_built(planes))["TrafficExtension"]
    assert ext["spec"] == {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}], "priority": 1,
        "wasm": {"url": f"oci://{IMAGE}", "sha256": DIGEST, "pluginName": "my_root_id",
                 "pluginConfig": {"header": "x-edge", "value": "default"}, "failStrategy": "FAIL_CLOSE"}}
    crd = Draft7Validator(json.loads((ISTIO_CRDS / "trafficextension.v1alpha1.schema.json").read_text(encoding="utf-8")))
    assert [e.message for e in crd.iter_errors(ext)] == []
    planes.write("filters.yaml", spec(gateway, istio="1.29").replace("filters:\n", "output: {kind: TrafficExtension}\n"
                                                                    "filters:\n", 1))
    result = planes.cli("validate")
    assert result.exit_code == 2
    assert "the spec's output kind TrafficExtension needs Istio 1.30 or later for this gateway too" in result.output


def test_envoy_gateway_policies_give_each_http_route_its_whole_list(planes: Repo) -> None:
    planes.write("filters.yaml", spec(EDGE.replace("        rules:\n", """        rules:
          - {httpRoute: [api], config: {value: first}}
""") + """      - name: second
        global: false
        rules: [{httpRoute: [api], config: {header: x-second}}]
""").replace("gateways:\n", f"""  - name: second
    wasm: oci://{IMAGE}
    sha256: {DIGEST}
    failOpen: true
gateways:
"""))
    policies = {p["metadata"]["name"]: p for p in _by_kind(_built(planes))["EnvoyExtensionPolicy"]}
    assert sorted(policies) == ["eg", "eg-api", "eg-storefront"]
    assert {p["metadata"]["namespace"] for p in policies.values()} == {"web"}
    gateway = policies["eg"]["spec"]
    assert gateway["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}]
    assert [w["name"] for w in gateway["wasm"]] == ["example-filter"]  # second runs only where a rule says
    assert gateway["wasm"][0] == {"name": "example-filter", "rootID": "my_root_id",
                                  "code": {"type": "Image", "image": {"url": IMAGE, "sha256": DIGEST}},
                                  "config": {"header": "x-edge", "value": "default"}, "failOpen": False}
    api = policies["eg-api"]["spec"]
    assert api["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "api"}]
    # Each route's list keeps the spec's order, each filter with its configuration there.
    assert [(w["name"], w.get("config")) for w in api["wasm"]] == [
        ("example-filter", {"value": "first"}), ("second", {"header": "x-second"})]
    assert api["wasm"][1]["failOpen"] is True
    assert [w["name"] for w in policies["eg-storefront"]["spec"]["wasm"]] == ["example-filter"]


@needs_crds
def test_what_is_rendered_is_valid_for_the_real_crds(planes: Repo) -> None:
    found = _by_kind(_built(planes))
    crds = {"EnvoyFilter": ISTIO_CRDS / "envoyfilter.v1alpha3.schema.json", "EnvoyExtensionPolicy": EG_CRD}
    for kind, path in crds.items():
        crd = Draft7Validator(json.loads(path.read_text(encoding="utf-8")))
        assert found[kind]
        for obj in found[kind]:
            assert [e.message for e in crd.iter_errors(obj)] == [], obj["metadata"]["name"]
    # The WasmPlugin of a gateway without rules, attached by targetRefs, in Istio's own CRD.
    planes.write("filters.yaml", spec("""  - name: ingress
    controlPlane: istio
    gatewayRef: public
    filters: [example-filter]
"""))
    (plugin,) = _by_kind(_built(planes))["WasmPlugin"]
    wasm_crd = Draft7Validator(json.loads((ISTIO_CRDS / "wasmplugin.v1alpha1.schema.json").read_text(encoding="utf-8")))
    assert [e.message for e in wasm_crd.iter_errors(plugin)] == []
    eg = Draft7Validator(json.loads(EG_CRD.read_text(encoding="utf-8")))
    policy = found["EnvoyExtensionPolicy"][0]
    broken = {**policy, "spec": {**policy["spec"], "wasm": [{"config": {}}]}}  # no code: the CRD refuses it
    assert [e.message for e in eg.iter_errors(broken)]


def _spec_of(schema: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema["properties"]["spec"]["properties"]
    return props


@pytest.mark.skipif(not EG_CRD.exists(), reason=f"{EG_CRD} is missing")
def test_our_envoy_extension_policy_schema_is_the_crd_or_stricter() -> None:
    ours = json.loads(EG_OURS.read_text(encoding="utf-8"))
    theirs = json.loads(EG_CRD.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(ours)
    mine, crd = _spec_of(ours), _spec_of(theirs)
    assert set(mine) == {"targetRefs", "wasm"} and set(mine) <= set(crd)
    wasm = ours["$defs"]["wasm"]
    crd_wasm = crd["wasm"]["items"]
    assert set(wasm["properties"]) <= set(crd_wasm["properties"])
    assert set(crd_wasm["required"]) <= set(wasm["required"])
    assert ours["properties"]["spec"]["properties"]["wasm"]["maxItems"] == crd["wasm"]["maxItems"]
    code, crd_code = wasm["properties"]["code"], crd_wasm["properties"]["code"]
    assert set(code["properties"]) <= set(crd_code["properties"])
    crd_types = set.intersection(*(set(e["enum"]) for e in crd_code["properties"]["type"]["allOf"]))
    assert set(code["properties"]["type"]["enum"]) <= crd_types
    for source in ("http", "image"):
        assert set(code["properties"][source]["properties"]) <= set(crd_code["properties"][source]["properties"])
    ref, crd_ref = ours["$defs"]["targetRef"], crd["targetRefs"]["items"]
    assert set(ref["properties"]) <= set(crd_ref["properties"]) and set(crd_ref["required"]) <= set(ref["required"])
    # The CRD's CEL rules, which plain JSON Schema does not run: ours states them.
    rules = " ".join(r["rule"] for r in theirs["properties"]["spec"]["x-kubernetes-validations"])
    assert "gateway.networking.k8s.io" in rules and ref["properties"]["group"]["const"] == "gateway.networking.k8s.io"
    assert set(ref["properties"]["kind"]["enum"]) <= {"Gateway", "ListenerSet", "HTTPRoute", "GRPCRoute", "TCPRoute",
                                                     "UDPRoute", "TLSRoute"}
    # A bundled schema that is wrong fails here: an Image code without its image is refused by ours.
    validator = Draft202012Validator(ours)
    obj = {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy",
           "metadata": {"name": "x", "namespace": "web"},
           "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "g"}],
                    "wasm": [{"name": "f", "code": {"type": "Image"}}]}}
    assert list(validator.iter_errors(obj))
    obj["spec"]["wasm"][0]["code"]["image"] = {"url": IMAGE, "sha256": DIGEST}
    assert list(validator.iter_errors(obj)) == []


@pytest.mark.parametrize(("gateway", "message"), [
    ("  - {name: ingress, controlPlane: istio, filters: [{name: example-filter, rules: "
     "[{service: [a.b.svc.cluster.local], config: {}}]}]}\n",
     "filters.yaml:12:93: an Istio gateway scopes a rule by domain or httpRoute, not by service"),
    ("  - {name: ingress, controlPlane: istio, filters: [{name: example-filter, rules: "
     "[{domain: [a.example.com], config: {}}, {domain: [a.example.com], config: {}}]}]}\n",
     "filters.yaml:12:132: domain 'a.example.com' is already in rule 0 of this filter"),
    ("  - {name: ingress, controlPlane: istio, filters: [{name: example-filter, rules: "
     "[{domain: [a.example.com], config: {}}]}]}\n",
     "filters.yaml:12:51: per-domain configuration on an Istio gateway needs Envoy's per-route filter enable"),
    ("  - {name: eg, controlPlane: envoy-gateway, filters: [{name: example-filter, rules: "
     "[{httpRoute: [shop], config: {}}]}]}\n",
     "filters.yaml:12:99: HTTPRoute 'shop' is not in this gateway's httpRoutes; add it there (declared: none)"),
    ("  - {name: eg, controlPlane: envoy-gateway, port: 8080, filters: [example-filter]}\n",
     "filters.yaml:12:51: port means nothing to an Envoy Gateway gateway (it is for Istio); remove it"),
    ("  - {name: edge, controlPlane: higress, gatewayRef: edge, filters: [example-filter]}\n",
     "filters.yaml:12:53: gatewayRef means nothing to a Higress gateway (it is for Istio and Envoy Gateway)"),
])
def test_what_a_control_plane_cannot_say_is_refused(planes: Repo, gateway: str, message: str) -> None:
    planes.write("filters.yaml", spec(gateway, istio="1.19" if "per-route" in message else "1.22"))
    before = planes.tree()
    result = planes.cli("validate")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message), result.output
    assert planes.tree() == before


def test_diff_labels_policy_changes_a_listener_drain_and_a_gateway_plugin_config_hot(planes: Repo) -> None:
    assert planes.cli("render").exit_code == 0
    planes.write("filters.yaml", spec(INGRESS + EDGE.replace("config: {value: shop}", "config: {value: shop-v2}")))
    result = planes.cli("diff")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == ("~ EnvoyExtensionPolicy web/eg-storefront  "
                                             "(overlays/eg/httproute-storefront.envoyextensionpolicy.yaml); "
                                             "listener drains")
    plugins = """  - name: ingress
    controlPlane: istio
    filters: [{name: example-filter, config: {value: one}}]
"""
    planes.write("filters.yaml", spec(plugins))
    assert planes.cli("render").exit_code == 0
    planes.write("filters.yaml", spec(plugins.replace("value: one", "value: two")))
    result = planes.cli("diff")
    assert result.stdout.splitlines()[0] == ("~ WasmPlugin istio-system/ingress-example-filter  "
                                             "(overlays/ingress/example-filter.wasmplugin.yaml); hot")


def test_a_removed_gateway_leaves_no_policy_or_envoy_filter_behind(planes: Repo) -> None:
    assert planes.cli("render").exit_code == 0
    files = [planes.root / "overlays" / "eg" / "httproute-storefront.envoyextensionpolicy.yaml",
             planes.root / "overlays" / "ingress" / "example-filter.envoyfilter.yaml"]
    assert all(f.is_file() for f in files)
    planes.write("filters.yaml", spec(INGRESS + EDGE).split("gateways:\n")[0])
    result = planes.cli("render")
    assert result.exit_code == 0, result.output
    assert not any(f.exists() for f in files)
    assert not (planes.root / "overlays" / "eg").exists()
