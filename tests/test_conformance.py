"""renderer.conformance, the schemas in schemas/, and renderer.istio_versions."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from renderer import conformance, istio_versions
from renderer.conformance import (
    DEFAULT_KUBERNETES_VERSION,
    KubernetesSchema,
    OutputProblem,
    validate_objects,
)
from renderer.kubernetes_schemas import available_kubernetes_versions

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO / "schemas"
ISTIO_CRDS = REPO.parent / "shared" / "istio-crds"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"

Obj = dict[str, Any]


# ---- valid examples (the shapes the renderer produces) ------------------------------------------


def configmap(data: bytes = b"\0asm\x01\0\0\0") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "wasm-example-filter-0123456789",
            "namespace": "default",
            "labels": {"app.kubernetes.io/managed-by": "wasm-gitops", "wasm-gitops.io/filter": "example-filter"},
            "annotations": {"argocd.argoproj.io/sync-wave": "-1", "argocd.argoproj.io/sync-options": "PruneLast=true"},
        },
        "immutable": True,
        "binaryData": {"example-filter.wasm": base64.b64encode(data).decode("ascii")},
    }


def deployment_patch() -> Obj:
    volume = {"wasm-filters": {"projected": {"sources": [{"configMap": {
        "name": "wasm-example-filter-0123456789",
        "items": [{"key": "example-filter.wasm", "path": "example-filter.wasm"}]}}]}}}
    mount = {"wasm-filters": {"mountPath": "/var/local/lib/wasm-filters", "readOnly": True}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "productpage-v1"},
        "spec": {"template": {"metadata": {"annotations": {
            "sidecar.istio.io/userVolume": json.dumps(volume, separators=(",", ":")),
            "sidecar.istio.io/userVolumeMount": json.dumps(mount, separators=(",", ":")),
        }}}},
    }


def kustomization() -> Obj:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "default",
        "resources": ["../../apps/productpage", "example-filter.envoyfilter.yaml",
                      "https://github.com/example/repo//deploy?ref=v1.2.3"],
        "patches": [{"path": "deployment-patch.yaml",
                     "target": {"group": "apps", "version": "v1", "kind": "Deployment", "name": "productpage-v1"}}],
        "labels": [{"pairs": {"app.kubernetes.io/managed-by": "wasm-gitops"}, "includeSelectors": False}],
        "commonAnnotations": {"wasm-gitops.io/spec": "filters.yaml"},
    }


def _envoy_filter(value: Obj, hcm: str = HCM, router: str = ROUTER) -> Obj:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "productpage-example-filter", "namespace": "default",
                     "labels": {"app.kubernetes.io/managed-by": "wasm-gitops"}},
        "spec": {
            "workloadSelector": {"labels": {"app": "productpage", "version": "v1"}},
            "priority": 0,
            "configPatches": [{
                "applyTo": "HTTP_FILTER",
                "match": {"context": "SIDECAR_INBOUND",
                          "listener": {"filterChain": {"filter": {"name": hcm, "subFilter": {"name": router}}}}},
                "patch": {"operation": "INSERT_BEFORE", "value": value},
            }],
        },
    }


def _plugin_config() -> Obj:
    return {
        "name": "example-filter",
        "root_id": "my_root_id",
        "fail_open": False,
        "configuration": {"@type": STRING_VALUE, "value": '{"a":1}'},
        "vm_config": {"vm_id": "example-filter", "runtime": "envoy.wasm.runtime.v8", "allow_precompiled": True,
                      "code": {"local": {"filename": "/var/local/lib/wasm-filters/example-filter.wasm"}}},
    }


def envoy_filter_typed() -> Obj:
    return _envoy_filter({"name": "envoy.filters.http.wasm", "typed_config": {"@type": WASM_TYPE, "config": _plugin_config()}})


def envoy_filter_typed_struct() -> Obj:
    return _envoy_filter({"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": WASM_TYPE,
        "value": {"config": _plugin_config()}}})


def envoy_filter_legacy() -> Obj:
    obj = _envoy_filter({"name": "envoy.filters.http.wasm", "config": {"config": {
        "name": "example-filter", "rootId": "my_root_id", "configuration": '{"a":1}',
        "vmConfig": {"vmId": "example-filter", "runtime": "envoy.wasm.runtime.v8", "allowPrecompiled": True,
                     "code": {"local": {"filename": "/var/local/lib/wasm-filters/example-filter.wasm"}}}}}},
        hcm="envoy.http_connection_manager", router="envoy.router")
    del obj["spec"]["priority"]  # Istio <= 1.6 has no priority
    return obj


def envoy_filter_route() -> Obj:
    """Not Wasm: exercises the route-configuration match and the remaining enums."""
    obj = _envoy_filter({"route": {"timeout": "3s"}})
    obj["spec"]["configPatches"] = [{
        "applyTo": "HTTP_ROUTE",
        "match": {"context": "SIDECAR_OUTBOUND", "proxy": {"proxyVersion": "^1\\.22.*"},
                  "routeConfiguration": {"portNumber": 9080, "vhost": {"name": "reviews:9080",
                                                                      "route": {"name": "default", "action": "ROUTE"}}}},
        "patch": {"operation": "MERGE", "value": {"route": {"timeout": "3s"}}, "filterClass": "AUTHZ"},
    }]
    return obj


def wasm_plugin_file() -> Obj:
    return {
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "productpage-example-filter", "namespace": "default",
                     "labels": {"app.kubernetes.io/managed-by": "wasm-gitops"}},
        "spec": {
            "selector": {"matchLabels": {"app": "productpage"}},
            "url": "file:///var/local/lib/wasm-filters/example-filter.wasm",
            "sha256": "1ef0c9a92b0420cf25f7fe5d481b231464bc88f486ca3b9c83ed5cc21d2f6210",
            "pluginName": "my_root_id",
            "pluginConfig": {"a": 1, "nested": {"list": [1, "x", None]}},
            "failStrategy": "FAIL_CLOSE",
            "match": [{"mode": "SERVER"}],
            "phase": "AUTHZ",
            "priority": 10,
        },
    }


def wasm_plugin_oci() -> Obj:
    obj = wasm_plugin_file()
    obj["spec"].update({
        "url": "oci://ghcr.io/example/filters/example-filter:v1",
        "imagePullPolicy": "IfNotPresent",
        "imagePullSecret": "registry-pull-secret",
        "vmConfig": {"env": [{"name": "POD_NAME", "valueFrom": "HOST"}, {"name": "TRUST_DOMAIN", "value": "cluster.local"}]},
        "match": [{"mode": "CLIENT_AND_SERVER", "ports": [{"number": 9080}]}],
        "type": "HTTP",
        "failStrategy": "FAIL_OPEN",
    })
    return obj


def wasm_plugin_gateway() -> Obj:
    obj = wasm_plugin_file()
    del obj["spec"]["selector"]
    obj["spec"]["targetRefs"] = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ingress"}]
    obj["spec"]["url"] = "https://example.com/filters/example-filter.wasm"
    obj["spec"]["match"] = [{"mode": "CLIENT"}]
    return obj


VALID: dict[str, Callable[[], Obj]] = {
    "configmap": configmap,
    "deployment_patch": deployment_patch,
    "kustomization": kustomization,
    "envoy_filter_typed": envoy_filter_typed,
    "envoy_filter_typed_struct": envoy_filter_typed_struct,
    "envoy_filter_legacy": envoy_filter_legacy,
    "envoy_filter_route": envoy_filter_route,
    "wasm_plugin_file": wasm_plugin_file,
    "wasm_plugin_oci": wasm_plugin_oci,
    "wasm_plugin_gateway": wasm_plugin_gateway,
}
ISTIO_EXAMPLES = [name for name in VALID if name.startswith(("envoy_filter", "wasm_plugin"))]


def paths(obj: Obj, file: str = "out/x.yaml") -> list[str]:
    return [p.json_path for p in validate_objects([(file, obj)])]


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_examples_pass(name: str) -> None:
    assert validate_objects([(f"out/{name}.yaml", VALID[name]())]) == []


def test_the_lead_example_passes_together_with_its_kustomization() -> None:
    objects = [
        ("base/default/example-filter.configmap.yaml", configmap()),
        ("overlays/productpage/example-filter.envoyfilter.yaml", envoy_filter_typed()),
        ("overlays/productpage/deployment-patch.yaml", deployment_patch()),
        ("overlays/productpage/kustomization.yaml", kustomization()),
    ]
    assert validate_objects(objects) == []


def test_problem_str() -> None:
    problem = OutputProblem("base/x.yaml", "ConfigMap", "default/wasm-x", "$.binaryData", "message")
    assert str(problem) == "BUG: base/x.yaml: ConfigMap default/wasm-x: $.binaryData: message"


# ---- invalid examples: exact paths ----------------------------------------------------------------


def _set(obj: Obj, path: tuple[str | int, ...], value: Any) -> Obj:
    node: Any = obj
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


_DELETE = object()
_PATCH = ("spec", "configPatches", 0, "patch")
_CFG = (*_PATCH, "value", "typed_config", "config")
_CFG_PATH = "$.spec.configPatches[0].patch.value.typed_config.config"
_ANNOTATIONS = ("spec", "template", "metadata", "annotations")
_POD_ANNOTATIONS = "$.spec.template.metadata.annotations"

# (id, example, path to change, new value or _DELETE, expected problem paths in order)
INVALID: list[tuple[str, Callable[[], Obj], tuple[str | int, ...], Any, list[str]]] = [
    ("cm-not-base64", configmap, ("binaryData", "example-filter.wasm"), "not base64!",
     ["$.binaryData['example-filter.wasm']"]),
    ("cm-bad-key", configmap, ("binaryData",), {"bad key": "AAAA"}, ["$.binaryData['bad key']"]),
    ("cm-data-duplicate", configmap, ("data",), {"example-filter.wasm": "x"}, ["$.data['example-filter.wasm']"]),
    ("cm-int-annotation", configmap, ("metadata", "annotations", "argocd.argoproj.io/sync-wave"), -1,
     ["$.metadata.annotations['argocd.argoproj.io/sync-wave']"]),
    ("cm-bad-annotation-key", configmap, ("metadata", "annotations", "bad key!"), "x", ["$.metadata.annotations['bad key!']"]),
    ("cm-unknown-field", configmap, ("binarydata",), {}, ["$"]),
    ("cm-bad-name", configmap, ("metadata", "name"), "Wasm_Filter", ["$.metadata.name"]),
    ("cm-bad-namespace", configmap, ("metadata", "namespace"), "a.b", ["$.metadata.namespace"]),
    ("cm-bad-label", configmap, ("metadata", "labels"), {"app": "-x-"}, ["$.metadata.labels.app"]),
    ("cm-null", configmap, ("immutable",), None, ["$.immutable"]),
    ("patch-misplaced-annotations", deployment_patch, ("spec", "annotations"), {"a": "b"}, ["$.spec"]),
    ("patch-bool-annotation", deployment_patch, (*_ANNOTATIONS, "sidecar.istio.io/inject"), True,
     [f"{_POD_ANNOTATIONS}['sidecar.istio.io/inject']"]),
    ("patch-null-annotation", deployment_patch, (*_ANNOTATIONS, "sidecar.istio.io/inject"), None,
     [f"{_POD_ANNOTATIONS}['sidecar.istio.io/inject']"]),
    ("patch-no-name", deployment_patch, ("metadata", "name"), _DELETE, ["$.metadata.name"]),
    ("patch-bad-volume-json", deployment_patch, (*_ANNOTATIONS, "sidecar.istio.io/userVolume"), "{oops",
     [f"{_POD_ANNOTATIONS}['sidecar.istio.io/userVolume']"]),
    ("patch-bad-mount", deployment_patch, (*_ANNOTATIONS, "sidecar.istio.io/userVolumeMount"),
     '{"wasm-filters": {"mountpath": "/x"}}', [f"{_POD_ANNOTATIONS}['sidecar.istio.io/userVolumeMount']"] * 2),
    ("patch-volume-list-without-name", deployment_patch, (*_ANNOTATIONS, "sidecar.istio.io/userVolume"),
     '[{"configMap": {"name": "x"}}]', [f"{_POD_ANNOTATIONS}['sidecar.istio.io/userVolume']"]),
    ("kz-wrong-kind", kustomization, ("kind",), "Component", ["$"]),  # no schema registered for it
    ("kz-deprecated-field", kustomization, ("patchesStrategicMerge",), ["x.yaml"], ["$"]),
    ("kz-absolute-resource", kustomization, ("resources", 0), "/abs/path", ["$.resources[0]"]),
    ("kz-duplicate-resource", kustomization, ("resources", 1), "../../apps/productpage", ["$.resources"]),
    ("kz-patch-no-path", kustomization, ("patches", 0, "path"), _DELETE, ["$.patches[0]"]),
    ("kz-target-typo", kustomization, ("patches", 0, "target", "Kind"), "Deployment", ["$.patches[0].target"]),
    ("kz-label-bool", kustomization, ("labels", 0, "pairs", "enabled"), True, ["$.labels[0].pairs.enabled"]),
    ("ef-apiversion", envoy_filter_typed, ("apiVersion",), "networking.istio.io/v1beta1", ["$"]),  # unregistered pair
    ("ef-invalid-applyto", envoy_filter_typed, ("spec", "configPatches", 0, "applyTo"), "INVALID",
     ["$.spec.configPatches[0].applyTo"]),
    ("ef-bad-context", envoy_filter_typed, ("spec", "configPatches", 0, "match", "context"), "SIDECAR",
     ["$.spec.configPatches[0].match.context"]),
    ("ef-waypoint-context", envoy_filter_typed, ("spec", "configPatches", 0, "match", "context"), "WAYPOINT",
     ["$.spec.configPatches[0].match"]),
    ("ef-bad-operation", envoy_filter_typed, (*_PATCH, "operation"), "INSERT", ["$.spec.configPatches[0].patch.operation"]),
    ("ef-no-patches", envoy_filter_typed, ("spec", "configPatches"), [], ["$.spec.configPatches"]),
    ("ef-priority-string", envoy_filter_typed, ("spec", "priority"), "1", ["$.spec.priority"]),
    ("ef-selector-typo", envoy_filter_typed, ("spec", "workloadSelector", "matchLabels"), {"a": "b"},
     ["$.spec.workloadSelector"]),
    ("ef-bad-annotation-key", envoy_filter_typed, ("metadata", "annotations"), {"bad key!": "x"}, ["$.metadata.annotations"]),
    ("ef-two-objects", envoy_filter_typed, ("spec", "configPatches", 0, "match", "cluster"), {"name": "x"},
     ["$.spec.configPatches[0].match", "$.spec.configPatches[0].match"]),
    ("ef-runtime", envoy_filter_typed, (*_CFG, "vm_config", "runtime"), "v8", [f"{_CFG_PATH}.vm_config.runtime"]),
    ("ef-camelcase", envoy_filter_typed, (*_CFG, "rootId"), "x", [_CFG_PATH]),
    ("ef-null-root-id", envoy_filter_typed, (*_CFG, "root_id"), None, [f"{_CFG_PATH}.root_id"]),
    ("ef-config-string", envoy_filter_typed, (*_CFG, "configuration"), '{"a":1}', [f"{_CFG_PATH}.configuration"]),
    ("ef-relative-file", envoy_filter_typed, (*_CFG, "vm_config", "code", "local", "filename"), "x.wasm",
     [f"{_CFG_PATH}.vm_config.code.local.filename"]),
    ("ef-wrong-type-url", envoy_filter_typed, (*_PATCH, "value", "typed_config", "@type"), "type.googleapis.com/Wasm",
     ["$.spec.configPatches[0].patch.value"]),
    ("ef-typed-struct-type-url", envoy_filter_typed_struct, (*_PATCH, "value", "typed_config", "value", "config", "vm_config"),
     {"runtime": "envoy.wasm.runtime.v8"}, ["$.spec.configPatches[0].patch.value.typed_config.value.config.vm_config"]),
    ("ef-legacy-any-config", envoy_filter_legacy, (*_PATCH, "value", "config", "config", "configuration"),
     {"@type": STRING_VALUE, "value": "x"}, ["$.spec.configPatches[0].patch.value.config.config.configuration"]),
    ("ef-legacy-name", envoy_filter_legacy, (*_PATCH, "value", "name"), "envoy.wasm",
     ["$.spec.configPatches[0].patch.value.name"]),
    ("wp-no-url", wasm_plugin_file, ("spec", "url"), _DELETE, ["$.spec"]),
    ("wp-no-scheme", wasm_plugin_file, ("spec", "url"), "ghcr.io/x/y:v1", ["$.spec.url"]),
    ("wp-short-sha", wasm_plugin_file, ("spec", "sha256"), "abc", ["$.spec.sha256"]),
    ("wp-upper-sha", wasm_plugin_file, ("spec", "sha256"), "A" * 64, ["$.spec.sha256"]),
    ("wp-fail-strategy", wasm_plugin_file, ("spec", "failStrategy"), "FAIL_CLOSED", ["$.spec.failStrategy"]),
    ("wp-phase", wasm_plugin_file, ("spec", "phase"), "UNSPECIFIED_PHASE", ["$.spec.phase"]),
    ("wp-mode", wasm_plugin_file, ("spec", "match", 0, "mode"), "INBOUND", ["$.spec.match[0].mode"]),
    ("wp-port", wasm_plugin_file, ("spec", "match", 0, "ports"), [{"number": 0}], ["$.spec.match[0].ports[0].number"]),
    ("wp-priority-null", wasm_plugin_file, ("spec", "priority"), None, ["$.spec.priority"]),
    ("wp-pull-policy", wasm_plugin_oci, ("spec", "imagePullPolicy"), "IfNotExists", ["$.spec.imagePullPolicy"]),
    ("wp-host-env-value", wasm_plugin_oci, ("spec", "vmConfig", "env", 0, "value"), "x", ["$.spec.vmConfig.env[0]"]),
    ("wp-selector-and-targets", wasm_plugin_gateway, ("spec", "selector"), {"matchLabels": {"a": "b"}}, ["$.spec"]),
    ("wp-cross-namespace-target", wasm_plugin_gateway, ("spec", "targetRefs", 0, "namespace"), "other",
     ["$.spec.targetRefs[0].namespace"]),
    ("wp-unknown-field", wasm_plugin_file, ("spec", "verificationKey"), "k", ["$.spec"]),
    ("wp-status", wasm_plugin_file, ("status",), {}, ["$"]),
]


@pytest.mark.parametrize(("make", "path", "value", "expected"),
                         [pytest.param(*case[1:], id=case[0]) for case in INVALID])
def test_invalid_examples_report_exact_paths(make: Callable[[], Obj], path: tuple[str | int, ...], value: Any,
                                             expected: list[str]) -> None:
    assert paths(_set(make(), path, value)) == expected


def test_configmap_over_one_mebibyte() -> None:
    problems = validate_objects([("base/x.yaml", configmap(b"\0" * (1024 * 1024 + 1)))])
    assert [(p.json_path, "1 MiB" in p.message) for p in problems] == [("$", True)]
    assert validate_objects([("base/x.yaml", configmap(b"\0" * (1024 * 1024)))]) == []


def test_problem_fields_and_message_are_short() -> None:
    obj = configmap(b"\0" * 200_000)
    obj["binaryData"]["example-filter.wasm"] += "!"
    [problem] = validate_objects([("base/default/x.yaml", obj)])
    assert (problem.file, problem.kind, problem.name) == ("base/default/x.yaml", "ConfigMap",
                                                          "default/wasm-example-filter-0123456789")
    assert "base64" in problem.message and len(problem.message) < 300


def test_unregistered_kind_and_non_mapping() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}
    not_a_mapping: Any = ["not", "a", "mapping"]
    assert [str(p) for p in validate_objects([("a.yaml", service), ("b.yaml", not_a_mapping)])] == [
        "BUG: a.yaml: Service x: $: no schema registered for v1 Service (add it to conformance.SCHEMAS)",
        "BUG: b.yaml: ? <unnamed>: $: expected a mapping, got list",
    ]


def test_patch_files_named_by_a_kustomization_are_validated_as_partial(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend Deployments are normally full objects: only the kustomization's reference makes the
    # annotation-only patch acceptable.
    schemas = dict(conformance.SCHEMAS)
    schemas[("apps/v1", "Deployment")] = KubernetesSchema(partial=False)
    monkeypatch.setattr(conformance, "SCHEMAS", schemas)
    patch = ("overlays/productpage/deployment-patch.yaml", deployment_patch())
    alone = validate_objects([patch])
    assert {p.json_path for p in alone} == {"$.spec"}  # selector and template.spec are required
    assert validate_objects([patch, ("overlays/productpage/kustomization.yaml", kustomization())]) == []


def test_kubernetes_versions() -> None:
    # Only the pinned release's schemas are committed (schemas/kubernetes-1.37.json, the kinds the
    # renderer writes): its patch releases resolve to it; an older minor is refused like a newer one,
    # by a message that names what is shipped.
    assert available_kubernetes_versions() == ((1, 37),) and DEFAULT_KUBERNETES_VERSION == "1.37"
    assert validate_objects([("a.yaml", configmap())], kubernetes_version="v1.37.4") == []
    for other in ("1.30", "v1.36.2", "1.38"):
        with pytest.raises(ValueError, match=r"\(it ships only 1\.37\)$"):
            validate_objects([("a.yaml", configmap())], kubernetes_version=other)
    for bad in ("9.99", "1.2", "latest", ""):
        with pytest.raises(ValueError):
            validate_objects([("a.yaml", configmap())], kubernetes_version=bad)


# ---- the schema files themselves ----------------------------------------------------------------

OWN_SCHEMAS = ["envoyfilter.schema.json", "wasmplugin.schema.json", "kustomization.schema.json"]


def _load(name: str) -> Obj:
    schema: Obj = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return schema


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for prop, sub in value.items():
                    yield f"{where}.{prop}", sub
                    yield from _properties(sub, f"{where}.{prop}")
            else:
                yield from _properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _properties(value, f"{where}[{index}]")


@pytest.mark.parametrize("name", OWN_SCHEMAS)
def test_schema_is_valid_draft_2020_12_with_descriptions(name: str) -> None:
    schema = _load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    undocumented = [where for where, sub in _properties(schema) if not (isinstance(sub, dict) and sub.get("description"))]
    assert undocumented == []


def test_envoy_wasm_value_schema_is_referenceable() -> None:
    schema = _load("envoyfilter.schema.json")
    value = envoy_filter_typed()["spec"]["configPatches"][0]["patch"]["value"]
    validator = Draft202012Validator({"$ref": "#/$defs/envoyWasmHttpFilter", "$defs": schema["$defs"]})
    assert list(validator.iter_errors(value)) == []
    value["typed_config"]["config"]["vm_config"]["runtime"] = "envoy.wasm.runtime.lua"
    assert [list(e.absolute_path) for e in validator.iter_errors(value)] == [["typed_config", "config", "vm_config", "runtime"]]


# ---- cross-check against Istio's own CRD schemas (release 1.30.3) --------------------------------

CRDS = {"EnvoyFilter": "envoyfilter.v1alpha3.schema.json", "WasmPlugin": "wasmplugin.v1alpha1.schema.json"}
OURS = {"EnvoyFilter": "envoyfilter.schema.json", "WasmPlugin": "wasmplugin.schema.json"}
needs_crds = pytest.mark.skipif(not ISTIO_CRDS.is_dir(), reason=f"Istio CRD schemas not found: {ISTIO_CRDS} is missing")


def _crd(kind: str) -> Obj:
    crd: Obj = json.loads((ISTIO_CRDS / CRDS[kind]).read_text(encoding="utf-8"))
    return crd


def _enums(node: Any, root: Obj, path: str) -> Iterator[tuple[str, frozenset[str]]]:
    """(dotted property path, enum values) for every enum reachable from node; lists add "[]".

    Follows local $refs and combinators but not `if`/`not` (conditions, not constraints).
    """
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        yield from _enums(target, root, path)
    if "enum" in node:
        yield path, frozenset(node["enum"])
    for key, sub in node.get("properties", {}).items():
        yield from _enums(sub, root, f"{path}.{key}" if path else key)
    if "items" in node:
        yield from _enums(node["items"], root, path + "[]")
    for combinator in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(combinator, []):
            yield from _enums(sub, root, path)
    if "then" in node:
        yield from _enums(node["then"], root, path)


def _enum_table(schema: Obj) -> dict[str, frozenset[str]]:
    table: dict[str, frozenset[str]] = {}
    for path, values in _enums(schema, schema, ""):
        if path.startswith("spec.") and ".patch.value" not in path:  # patch.value is a Struct in the CRD
            table[path] = table.get(path, frozenset()) | values
    return table


# CRD values our schemas leave out on purpose (placeholders whose rendering is always a bug).
EXPECTED_ENUM_DIFFERENCES = {
    "EnvoyFilter": {
        "spec.configPatches[].applyTo": {"INVALID"},
        "spec.configPatches[].patch.operation": {"INVALID"},
    },
    "WasmPlugin": {
        "spec.imagePullPolicy": {"UNSPECIFIED_POLICY"},
        "spec.phase": {"UNSPECIFIED_PHASE"},
        "spec.type": {"UNSPECIFIED_PLUGIN_TYPE"},
        "spec.match[].mode": {"UNDEFINED"},
    },
}


@needs_crds
@pytest.mark.parametrize("kind", sorted(CRDS))
def test_enums_are_subsets_of_the_istio_crd(kind: str) -> None:
    ours, theirs = _enum_table(_load(OURS[kind])), _enum_table(_crd(kind))
    assert sorted(ours) == sorted(theirs), "the same fields should be enums in both"
    extra = {path: set(values - theirs[path]) for path, values in ours.items() if values - theirs[path]}
    assert extra == {}, "our enums must be subsets of the CRD's"
    missing = {path: set(theirs[path] - values) for path, values in ours.items() if theirs[path] - values}
    assert missing == EXPECTED_ENUM_DIFFERENCES[kind]


def _enum_variants(obj: Obj, schema: Obj) -> Iterator[Obj]:
    """Copies of obj with each enum field it contains set to each allowed value in turn."""
    for path, values in _enum_table(schema).items():
        for value in sorted(values):
            variant = copy.deepcopy(obj)
            if _assign(variant, path.split("."), value):
                yield variant


def _assign(node: Any, parts: list[str], value: str) -> bool:
    head, rest = parts[0], parts[1:]
    is_list = head.endswith("[]")
    key = head.removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return False
    if not rest:
        if is_list:
            return False
        node[key] = value
        return True
    assigned = False
    for child in node[key] if is_list else [node[key]]:  # every list item, not just the first match
        assigned = _assign(child, rest, value) or assigned
    return assigned


@needs_crds
@pytest.mark.parametrize("name", ISTIO_EXAMPLES)
def test_examples_we_accept_are_accepted_by_the_istio_crd(name: str) -> None:
    obj = VALID[name]()
    kind = obj["kind"]
    crd = Draft7Validator(_crd(kind))
    ours = Draft202012Validator(_load(OURS[kind]))
    variants = [obj, *_enum_variants(obj, _load(OURS[kind]))]
    assert len(variants) > 1
    for variant in variants:
        if list(ours.iter_errors(variant)):
            continue  # e.g. a WAYPOINT context without a waypoint match: ours rejects, nothing to cross-check
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in crd.iter_errors({"spec": variant["spec"]})]
        assert errors == [], json.dumps(variant["spec"])[:500]


@needs_crds
def test_istio_crd_rejects_what_both_should_reject() -> None:
    # Sanity check of the cross-check itself: the CRD does see spec (an enum typo fails there too).
    obj = envoy_filter_typed()
    obj["spec"]["configPatches"][0]["applyTo"] = "HTTP_FILTERS"
    assert list(Draft7Validator(_crd("EnvoyFilter")).iter_errors({"spec": obj["spec"]}))


# ---- renderer.istio_versions ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1.22", (1, 22)), ("1.22.3", (1, 22)), ("v1.6.14", (1, 6)), (" 1.30.0-beta.1 ", (1, 30)), ("2.0", (2, 0)),
    ("1", None), ("1.", None), ("1.2.3.4", None), ("one.two", None), ("", None), ("1.22-rc", None), ("01.2", None),
])
def test_parse_version(text: str, expected: tuple[int, int] | None) -> None:
    assert istio_versions.parse_version(text) == expected


def test_supports_boundaries() -> None:
    supports = istio_versions.supports
    assert not supports((1, 6), "typed_config") and supports((1, 7), "typed_config")
    assert supports((1, 6), "legacy_config") and not supports((1, 7), "legacy_config")
    assert not supports((1, 11), "WasmPlugin") and supports((1, 12), "WasmPlugin")
    assert not supports((1, 10), "EnvoyFilter.priority") and supports((1, 11), "EnvoyFilter.priority")
    assert supports((1, 18), "filter_names.deprecated") and not supports((1, 19), "filter_names.deprecated")
    assert not supports((1, 18), "WasmPlugin.failStrategy") and supports((1, 19), "WasmPlugin.failStrategy")
    with pytest.raises(KeyError):
        supports((1, 22), "WasmPlugin.nope")


def test_feature_table_is_well_formed() -> None:
    names = [f.name for f in istio_versions.FEATURES]
    assert len(names) == len(set(names))
    for feature in istio_versions.FEATURES:
        assert feature.source and feature.note
        assert feature.until is None or feature.since <= feature.until
    # Every WasmPlugin spec field of our schema has a row, so the renderer can gate each one.
    fields = set(_load("wasmplugin.schema.json")["properties"]["spec"]["properties"])
    assert {f"WasmPlugin.{field}" for field in fields} <= set(names)
