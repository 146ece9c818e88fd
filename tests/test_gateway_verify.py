"""The spec with every control plane (tests/specs/good/every-control-plane): it renders, builds with the
real kustomize, validates against the real CRDs, and its gateways' tests pass in the real Envoy, each
request routed as its control plane routes it, so each route shows the configuration it got."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SHARED, Repo, kustomize, make_repo
from jsonschema import Draft7Validator
from test_oci import lock_for

EXAMPLE = REPO / "tests" / "specs" / "good" / "every-control-plane" / "filters.yaml"
CRDS = {("networking.istio.io/v1alpha3", "EnvoyFilter"): SHARED / "istio-crds" / "envoyfilter.v1alpha3.schema.json",
        ("extensions.istio.io/v1alpha1", "WasmPlugin"): SHARED / "istio-crds" / "wasmplugin.v1alpha1.schema.json",
        ("extensions.higress.io/v1alpha1", "WasmPlugin"): SHARED / "crds" / "higress-wasmplugin.v1alpha1.schema.json",
        ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"):
            SHARED / "crds" / "envoygateway-envoyextensionpolicy.v1alpha1.schema.json"}
needs_crds = pytest.mark.skipif(not all(p.exists() for p in CRDS.values()), reason="../shared CRDs are missing")


@pytest.fixture
def every(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path / "repo")
    shutil.copytree(REPO / "filters" / "example-filter", repo.root / "filters" / "example-filter")
    repo.write("filters.yaml", EXAMPLE.read_text(encoding="utf-8"))
    lock_for(repo, {"example-filter": ("filters/example-filter/example-filter.wasm",
                                       "registry.example.com/mesh/example-filter", "1.0.0")})
    return repo


@needs_crds
def test_one_spec_for_every_control_plane_renders_builds_validates_and_verifies(every: Repo) -> None:
    rendered = every.cli("render")
    assert rendered.exit_code == 0, rendered.output
    built = kustomize(every.root)
    kinds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for obj in built:
        kinds.setdefault((obj["apiVersion"], obj["kind"]), []).append(obj)
    for key, path in CRDS.items():
        crd = Draft7Validator(json.loads(path.read_text(encoding="utf-8")))
        assert kinds[key], key
        for obj in kinds[key]:
            assert [e.message for e in crd.iter_errors(obj)] == [], (key, obj["metadata"]["name"])
    sidecars = {o["metadata"]["name"] for o in kinds[("extensions.istio.io/v1alpha1", "WasmPlugin")]}
    assert sidecars == {"productpage-example-filter", "details-example-filter"}
    (higress,) = kinds[("extensions.higress.io/v1alpha1", "WasmPlugin")]
    assert [r["config"]["value"] for r in higress["spec"]["matchRules"]] == ["api", "shop"]
    verified = every.cli("verify")
    assert verified.exit_code == 0, verified.output
    lines = verified.output.splitlines()
    assert "PASS gateway:ingress/api.example.com gets the api configuration" in lines
    assert "PASS gateway:ingress/the checkout route gets its own configuration" in lines
    assert "PASS gateway:public/the storefront route gets its own configuration" in lines
    assert lines[-1] == "8 cases (8 passed, 0 failed)"


def test_a_route_shows_the_configuration_it_really_got(every: Repo) -> None:
    # The same requests, expecting the other route's configuration: Envoy's answer fails them.
    text = EXAMPLE.read_text(encoding="utf-8")
    every.write("filters.yaml", text.replace("responseHeaders: {x-eg: storefront}", "responseHeaders: {x-eg: gateway}")
                .replace("responseHeaders: {x-gateway: api}", "responseHeaders: {x-gateway: default}"))
    verified = every.cli("verify", "--format", "json", "ingress", "public")
    assert verified.exit_code == 1, verified.output
    results = {r["name"]: r for r in json.loads(verified.stdout)["cases"]}
    failed = sorted(name for name, r in results.items() if not r["passed"])
    assert failed == ["api.example.com gets the api configuration", "the storefront route gets its own configuration"]
    got = dict(results["the storefront route gets its own configuration"]["observed"]["responseHeaders"])
    assert got["x-eg"] == "storefront"
    got = dict(results["api.example.com gets the api configuration"]["observed"]["responseHeaders"])
    assert got["x-gateway"] == "api"


def test_a_higress_filter_gets_every_rule_and_matches_itself(every: Repo) -> None:
    from renderer.envoy import routes

    assert every.cli("render").exit_code == 0
    plugin = every.load("overlays/edge/example-filter.higress-wasmplugin.yaml")
    ((_, converted),) = routes._higress_as_istio([("overlays/edge/x.yaml", plugin)])
    assert converted["spec"]["pluginConfig"] == {
        "header": "x-edge", "value": "default",
        "_rules_": [{"header": "x-edge", "value": "api", "_match_domain_": ["api.example.com"]},
                    {"header": "x-edge", "value": "shop", "_match_domain_": ["shop.example.com"]}]}
    disabled = {**plugin, "spec": {**plugin["spec"], "defaultConfigDisable": True, "matchRules": []}}
    assert routes._higress_as_istio([("overlays/edge/x.yaml", disabled)]) == []


@pytest.mark.parametrize("kind", ["WasmPlugin", "TrafficExtension"])
def test_an_istio_gateway_of_wasm_plugins_runs_the_filter_everywhere(every: Repo, kind: str) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("        rules:\n          - domain: [api.example.com]\n            config: {header: x-gateway")
    end = text.index("    tests:\n      - name: api.example.com")
    text = text[:start] + text[end:]
    if kind == "TrafficExtension":
        text = text.replace('istio: "1.22"\noutput: {kind: WasmPlugin}', 'istio: "1.30"\noutput: {kind: TrafficExtension}')
    every.write("filters.yaml", text)
    assert every.cli("render").exit_code == 0
    assert (every.root / "overlays" / "ingress" / f"example-filter.{kind.lower()}.yaml").exists()
    verified = every.cli("verify", "--format", "json", "ingress")
    results = {r["name"]: r for r in json.loads(verified.stdout)["cases"]}
    # Without rules every host gets the default: the api test fails, the other passes.
    assert not results["api.example.com gets the api configuration"]["passed"]
    assert results["another host gets the default configuration"]["passed"]


def test_the_documented_example_is_the_verified_spec() -> None:
    doc = (REPO / "docs" / "gateways.md").read_text(encoding="utf-8")
    block = doc.split("```yaml\n", 1)[1].split("```\n", 1)[0]
    assert block == EXAMPLE.read_text(encoding="utf-8")


def test_a_gateway_whose_module_cannot_be_pulled_fails_its_cases_with_the_reason(every: Repo) -> None:
    # An oci:// reference the lock does not pin: verify reaches no registry for it, and says so per case.
    digest = "ab" * 32
    text = EXAMPLE.read_text(encoding="utf-8").replace("services:\n", f"""  - name: remote-filter
    wasm: oci://registry.example.com/mesh/remote@sha256:{digest}
    sha256: {digest}
services:
""", 1).replace("""    filters:
      - name: example-filter
        config: {header: x-eg, value: gateway}""", """    filters:
      - name: remote-filter
      - name: example-filter
        config: {header: x-eg, value: gateway}""")
    every.write("filters.yaml", text)
    verified = every.cli("verify", "--format", "json", "public", "ingress")
    assert verified.exit_code == 1, verified.output
    results = json.loads(verified.stdout)["cases"]
    public = [r for r in results if r["target"] == "public"]
    assert public and all(not r["passed"] for r in public)
    assert all("could not be pulled" in r["error"] and "filters.lock pins" in r["error"] for r in public)
    assert all(r["passed"] for r in results if r["target"] == "ingress")  # the other gateway is untouched


def test_an_extension_configuration_nobody_adds_is_refused() -> None:
    from renderer.envoy import istio, routes
    from renderer.model import Gateway

    gateway = Gateway("ingress", "istio", "istio-system", (), selector=(("istio", "ingressgateway"),))
    envoy_filter = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                    "metadata": {"name": "ingress-f", "namespace": "istio-system"},
                    "spec": {"configPatches": [{"applyTo": "HTTP_FILTER", "match": {"context": "GATEWAY"}, "patch": {
                        "operation": "INSERT_BEFORE", "value": {"name": "istio-system.missing", "config_discovery": {}}}}]}}
    with pytest.raises(istio.ChainError, match="no EXTENSION_CONFIG patch adds"):
        routes.route_table(None, gateway, [("overlays/ingress/f.envoyfilter.yaml", envoy_filter)],  # type: ignore[arg-type]
                           Path("/nonexistent"), "upstream", lambda reference: b"")
