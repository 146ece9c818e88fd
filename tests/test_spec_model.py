"""The spec stage's shared pieces: the defaults table against the schema's prose, one json_path with two
quotings, one translator with two vocabularies, the context the meaning checks report through, and
one refusal of unknown filter names."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import BASIC_SPEC, REPO, Repo

from renderer import publish
from renderer.errors import SpecError, UsageError
from renderer.model import DEFAULTS, SCHEMA_FILE
from renderer.schema_errors import KUBERNETES, SPEC, json_path, kubernetes_message
from renderer.spec import load_build_targets, load_spec, parse
from renderer.spec.context import SpecContext


def _schema() -> dict[str, Any]:
    return json.loads((REPO / "schemas" / SCHEMA_FILE).read_text(encoding="utf-8"))


def _at(schema: dict[str, Any], pointer: str) -> dict[str, Any]:
    node: Any = schema
    for part in pointer.removeprefix("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node  # type: ignore[no-any-return]


@pytest.mark.parametrize("entry", dataclasses.fields(DEFAULTS), ids=lambda f: f.name)
def test_every_default_is_the_one_the_schema_describes(entry: dataclasses.Field[Any]) -> None:
    schema = _schema()
    node = _at(schema, entry.metadata["at"])
    value = getattr(DEFAULTS, entry.name)
    assert entry.metadata["words"] in node["description"], (entry.name, node["description"])
    if isinstance(value, str) and value:
        assert value in node["description"]
    # The default must be a value the schema accepts where it stands.
    target = node
    while "$ref" in target:
        target = _at(schema, target["$ref"].removeprefix("#"))
    if "properties" not in target:  # an object's default is described by its parts
        jsonschema.validate(value, {**target, "$defs": schema["$defs"]})


def test_a_spec_without_optional_keys_is_modelled_with_the_table(repo: Repo) -> None:
    repo.write("filters.yaml", "apiVersion: wasm-gitops/v1\nkind: FilterSet\nistio: \"1.22\"\n"
               "filters:\n  - {name: example-filter, wasm: filters/example-filter.wasm}\n"
               "services:\n  - {name: details, deployment: details-v1, resources: [apps/details], "
               "filters: [example-filter]}\n"
               "gitops:\n  repoURL: https://git.example.com/mesh.git\n  argocd: {}\n  flux: {}\n")
    fs = load_spec(repo.spec, inspect=False).filter_set
    f, s = fs.filters[0], fs.services[0]
    assert (f.runtime, f.root_id, f.allow_precompiled, f.fail_open, f.delivery, f.vm_id) == (
        DEFAULTS.runtime, DEFAULTS.root_id, DEFAULTS.allow_precompiled, DEFAULTS.fail_open, DEFAULTS.delivery,
        "example-filter")
    assert (s.namespace, s.context, s.output) == (DEFAULTS.namespace, DEFAULTS.context, DEFAULTS.output_kind)
    assert fs.kubernetes == DEFAULTS.kubernetes_version == (1, 33)
    assert fs.gitops is not None and fs.gitops.argocd is not None and fs.gitops.flux is not None
    assert (fs.gitops.name, fs.gitops.target_revision) == (DEFAULTS.gitops_name, DEFAULTS.target_revision)
    a, fl = fs.gitops.argocd, fs.gitops.flux
    assert (a.mode, a.namespace, a.project, a.destination_server, a.automated) == (
        "Application", "argocd", "default", "https://kubernetes.default.svc", True)
    assert (fl.mode, fl.namespace, fl.source_ref.kind, fl.source_ref.name, fl.interval) == (
        "Kustomization", "flux-system", "GitRepository", "flux-system", "10m")


def test_json_path_quotes_only_where_asked() -> None:
    parts = ("services", 0, "selector", "app.kubernetes.io/name")
    assert json_path(parts) == "$.services[0].selector.app.kubernetes.io/name"
    assert json_path(parts, quoted=True) == "$.services[0].selector['app.kubernetes.io/name']"
    assert json_path(("a", "it's\\"), quoted=True) == "$.a['it\\'s\\\\']"
    assert json_path(()) == json_path((), quoted=True) == "$"


def test_one_error_in_two_vocabularies() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object"}}}
    error = next(jsonschema.Draft202012Validator(schema).iter_errors({"spec": [1]}))
    assert [(p.path, p.message) for p in SPEC.explain(error)] == [(("spec",), "spec must be a map, not a list")]
    assert [(p.path, p.message) for p in KUBERNETES.explain(error)] == [(("spec",), "expected object, got array")]


def test_a_kubernetes_message_stays_one_short_line() -> None:
    error = next(jsonschema.Draft202012Validator({"maxLength": 1}).iter_errors("x" * 1000))
    message = kubernetes_message(error)
    assert len(message) == 300 and message.endswith("...")


def test_a_keyword_without_a_rule_falls_back_to_the_validators_words() -> None:
    error = next(jsonschema.Draft202012Validator({"properties": {"n": {"multipleOf": 3}}}).iter_errors({"n": 4}))
    assert [p.message for p in SPEC.explain(error)] == ["n: 4 is not a multiple of 3"]


def test_checks_report_through_the_context_at_the_key_or_the_value(repo: Repo) -> None:
    doc = parse(repo.spec)
    ctx = SpecContext(doc, repo.spec, repo.root.resolve())

    def check(raw: dict[str, Any], path: tuple[str | int, ...], into: SpecContext) -> None:
        into.error(path + ("selector",), f"{raw['name']}: bad selector", key=True)
        into.warn(path + ("deployment",), f"{raw['name']}: look again")

    check(doc.data["services"][0], ("services", 0), ctx)
    lines = repo.spec.read_text(encoding="utf-8").splitlines()
    (error,), (warning,) = ctx.errors, ctx.warnings
    assert lines[error.line - 1][error.column - 1:].startswith("selector:")
    assert lines[warning.line - 1][warning.column - 1:] == "productpage-v1"
    assert (error.severity, warning.severity) == ("error", "warning")


def test_unknown_filter_names_are_refused_in_the_order_each_command_reports(repo: Repo) -> None:
    with pytest.raises(UsageError) as built:
        load_build_targets(repo.spec, ["zeta", "example-filter", "alpha"])
    assert str(built.value) == f"no filter named alpha, zeta in {repo.spec}"
    with pytest.raises(UsageError) as pushed:
        publish.load_targets(repo.spec, ["zeta", "example-filter", "alpha", "zeta"], need_image=False)
    assert str(pushed.value) == f"no filter named zeta, alpha in {repo.spec}"



_ROOT_ID = "    rootId: my_root_id\n"
_DETAILS_FILTERS = "    filters: [example-filter]\n"

# Schema keywords the bad-spec corpus does not reach, each with the one finding filters.yaml gets.
SCHEMA_CASES = {
    "maximum": (BASIC_SPEC.replace(_ROOT_ID, _ROOT_ID + "    priority: 2000000\n"),
                "filters.yaml:8:15: filters[0].priority: 2000000 is out of range (maximum 1000000)"),
    "minimum": (BASIC_SPEC.replace(_ROOT_ID, _ROOT_ID + "    priority: -2000000\n"),
                "filters.yaml:8:15: filters[0].priority: -2000000 is out of range (minimum -1000000)"),
    "minItems": (BASIC_SPEC.replace(_DETAILS_FILTERS, "    filters: []\n"),
                 "filters.yaml:23:14: services[1].filters must list at least 1 item"),
    "minLength": (BASIC_SPEC.replace(_ROOT_ID, _ROOT_ID + '    configSchema: ""\n'),
                  "filters.yaml:8:19: filters[0].configSchema must not be empty"),
    "minProperties": (BASIC_SPEC.replace("selector: {app: productpage, version: v1}", "selector: {}"),
                      "filters.yaml:15:15: services[0].selector must not be empty; remove it or add entries"),
    "propertyNames": (BASIC_SPEC.replace(_DETAILS_FILTERS, _DETAILS_FILTERS + "    proxyLogLevel: {Wasm: debug}\n"),
                      "filters.yaml:24:20: services[1].proxyLogLevel: 'Wasm' does not match '^[a-z0-9_]+$'"),
    "oneOf, neither shape": (BASIC_SPEC.replace(_DETAILS_FILTERS, "    filters: [3]\n"),
                             "filters.yaml:23:15: services[1].filters[0] must be a filter name or a map with "
                             "'name' (and 'config'), not the number 3"),
    "oneOf, the map meant": (BASIC_SPEC.replace(_DETAILS_FILTERS, "    filters: [{name: example-filter, confg: {}}]\n"),
                             "filters.yaml:23:38: unknown key 'confg' in services[1].filters[0]; did you mean "
                             "'config'?"),
    "anyOf": (BASIC_SPEC + "gitops: {name: x}\n",
              "filters.yaml:24:9: gitops: name at least one controller: add 'argocd:' or 'flux:' (or both)"),
    "dependentRequired": (BASIC_SPEC + "gitops: {argocd: {}}\n",
                          "filters.yaml:24:10: gitops.argocd needs 'repoURL' in gitops; add it"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_each_schema_rule_says_its_words_where_the_value_is(repo: Repo, case: str) -> None:
    text, expected = SCHEMA_CASES[case]
    repo.write("filters.yaml", text)
    with pytest.raises(SpecError) as e:
        load_spec(repo.spec, inspect=False)
    assert [str(f) for f in e.value.findings] == [expected]


# The keys of README's annotated example whose comment states a default, and the table entry it is.
_README_KEYS = {"rootId": "root_id", "runtime": "runtime", "allowPrecompiled": "allow_precompiled",
                "failOpen": "fail_open", "namespace": "namespace", "context": "context"}


def _stated_default(value: str, comment: str) -> str | None:
    """What a comment says the default is: `default X`, `default` (the value shown), `X (default)`."""
    if comment == "default":
        return value
    if (m := re.match(r"default ([^:(]+?)(?: \(.*)?$", comment)) is not None:
        return m.group(1)
    if (m := re.match(r"(\S+) \(default\)", comment)) is not None:
        return m.group(1)
    return None


def test_the_readme_example_states_the_tables_defaults() -> None:
    stated: dict[str, Any] = {}
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s+(\w+): (.+?)\s+# (.+)$", line)
        if m is not None and m.group(1) in _README_KEYS:
            text = _stated_default(m.group(2), m.group(3))
            if text is not None:
                stated[m.group(1)] = yaml.safe_load(text)
    assert stated == {key: getattr(DEFAULTS, entry) for key, entry in _README_KEYS.items()}
