"""Configuration schemas: the example filter's schema says what the filter itself accepts (checked in
Envoy), the schema file is hostile input (never fetched from, bounded, refused where it is not a schema),
and a Higress spec.yaml serves as one."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Repo

from renderer import config_schema
from renderer.commands.verify import verify

HEAD = 'apiVersion: wasm-gitops/v1\nkind: FilterSet\nistio: "1.22"\n'
EXAMPLE_FILTER = REPO / "filters" / "example-filter" / "example-filter.wasm"
EXAMPLE_SCHEMA = "filters/example-filter/config.schema.json"
SERVICE = "services:\n  - {name: productpage, deployment: productpage-v1, resources: [apps/productpage], " \
    "filters: [example-filter]}\n"

# (configuration, what the C source does with it)
CONFIGS: list[tuple[Any, bool]] = [
    ({}, True),
    ({"header": "x-a", "value": "b"}, True),
    ({"header": "X-Upper.Case_1~"}, True),
    ({"value": "tab\tand é"}, True),
    ({"value": ""}, True),
    ({"header": ""}, False),
    ({"header": "bad header"}, False),
    ({"header": "a:b"}, False),
    ({"header": "x-é"}, False),
    ({"value": "new\nline"}, False),
    ({"header": 1}, False),
    ({"value": None}, False),
    ({"value": ["a"]}, False),
    ([1, 2], False),
    ("plain text", False),
]


def spec_with_tests(configs: list[tuple[str, Any, bool]], schema: bool = False) -> str:
    tests = [{"name": name, "config": config, "expect": {"configRejected": True} if not accepted else {}}
             for name, config, accepted in configs]
    head = f"    configSchema: {EXAMPLE_SCHEMA}\n" if schema else ""
    # JSON is YAML: the configurations go in exactly as written above.
    return (HEAD + "filters:\n  - name: example-filter\n    wasm: filters/example-filter.wasm\n" + head
            + f"    tests: {json.dumps(tests)}\n" + SERVICE)


@pytest.mark.skipif(not EXAMPLE_FILTER.exists(), reason="filters/example-filter/example-filter.wasm is not built yet")
def test_the_example_schema_accepts_what_the_filter_accepts(repo: Repo) -> None:
    schema = config_schema.load(REPO, EXAMPLE_SCHEMA)
    repo.write("filters/example-filter.wasm", EXAMPLE_FILTER.read_bytes())
    cases = [(f"case {i}", config, accepted) for i, (config, accepted) in enumerate(CONFIGS)]
    repo.write("filters.yaml", spec_with_tests(cases))
    results = {r.case.test.name: r for r in verify(repo.spec, ()).results}
    for name, config, accepted in cases:
        assert results[name].passed, (config, results[name].failures)
        assert results[name].config_rejected is not accepted, config
        assert (config_schema.check(schema, config) == []) is accepted, config


@pytest.mark.skipif(not EXAMPLE_FILTER.exists(), reason="filters/example-filter/example-filter.wasm is not built yet")
def test_the_one_difference_is_unknown_keys_which_the_filter_ignores(repo: Repo) -> None:
    schema = config_schema.load(REPO, EXAMPLE_SCHEMA)
    config = {"header": "x-a", "hedaer": "typo"}
    (problem,) = config_schema.check(schema, config)
    assert problem.path == ("hedaer",) and problem.key and "did you mean 'header'?" in problem.message
    repo.write("filters/example-filter.wasm", EXAMPLE_FILTER.read_bytes())
    repo.write("filters.yaml", HEAD + "filters:\n  - name: example-filter\n    wasm: filters/example-filter.wasm\n"
               f"    tests: [{{name: typo, config: {json.dumps(config)}, "
               "expect: {responseHeaders: {x-a: added by our filter}}}]\n"
               + SERVICE)
    (result,) = verify(repo.spec, ()).results
    assert result.passed, result.failures


def test_the_repository_spec_names_the_example_schema() -> None:
    from renderer.spec import load_spec

    loaded = load_spec(REPO / "filters.yaml", inspect=False)
    (example,) = loaded.filter_set.filters
    assert example.config_schema is not None and example.config_schema.source == EXAMPLE_SCHEMA


@pytest.mark.skipif(not EXAMPLE_FILTER.exists(), reason="filters/example-filter/example-filter.wasm is not built yet")
def test_accepted_configurations_pass_validation_and_refused_ones_are_positioned(repo: Repo) -> None:
    repo.write("filters/example-filter.wasm", EXAMPLE_FILTER.read_bytes())
    repo.write(EXAMPLE_SCHEMA, (REPO / EXAMPLE_SCHEMA).read_bytes())
    good = [(f"ok {i}", c, True) for i, (c, accepted) in enumerate(CONFIGS) if accepted]
    repo.write("filters.yaml", spec_with_tests(good, schema=True))
    result = repo.cli("validate")
    assert result.exit_code == 0, result.output
    # Tests that expect the refusal are not checked: their wrong configuration is the point.
    refused = [(f"no {i}", c, False) for i, (c, accepted) in enumerate(CONFIGS) if not accepted]
    repo.write("filters.yaml", spec_with_tests(refused, schema=True))
    assert repo.cli("validate").exit_code == 0
    # The same configurations, expected to load, are each refused at their own test.
    wrong = [(name, c, True) for name, c, _ in refused]
    repo.write("filters.yaml", spec_with_tests(wrong, schema=True))
    result = repo.cli("validate")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert {line.split(": ", 1)[1].split(".config", 1)[0] for line in lines} == {
        f"filters[0].tests[{i}]" for i in range(len(wrong))}
    assert all(line.startswith("filters.yaml:8:") for line in lines), lines


# ------------------------------------------------------------------ the schema is untrusted input


class _Counter(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def schema_server() -> Iterator[str]:
    _Counter.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _with_schema(repo: Repo, schema: str, config: str = "{header: x-a}") -> Any:
    repo.write("filters/s.schema.json", schema)
    repo.write("filters.yaml", HEAD + "filters:\n  - name: example-filter\n    wasm: filters/example-filter.wasm\n"
               f"    configSchema: filters/s.schema.json\n    config: {config}\n" + SERVICE)
    return repo.cli("validate")


def test_no_reference_is_ever_fetched(repo: Repo, schema_server: str) -> None:
    for ref in (f"{schema_server}/remote.json", "other.schema.json", f"{schema_server}/x#/$defs/a"):
        result = _with_schema(repo, json.dumps({"properties": {"header": {"$ref": ref}}}))
        assert result.exit_code == 2
        assert result.output == (f"filters.yaml:7:19: configSchema 'filters/s.schema.json': /properties/header/$ref "
                                 f"refers to {ref!r}, outside the file; wasm-gitops never fetches a schema: copy what "
                                 "it needs under $defs and refer to it as '#/$defs/...'\n")
    # A document that names itself by URL still resolves its own pointers, without asking that URL.
    own = {"$id": f"{schema_server}/self.json", "$defs": {"h": {"type": "string"}},
           "properties": {"header": {"$ref": "#/$defs/h"}}}
    assert _with_schema(repo, json.dumps(own)).exit_code == 0
    result = _with_schema(repo, json.dumps(own), "{header: 1}")
    assert result.exit_code == 2 and "at $.header: 1 is not of type 'string'" in result.output
    result = _with_schema(repo, json.dumps({"$schema": f"{schema_server}/meta.json"}))
    assert result.exit_code == 2 and "is not a JSON Schema draft wasm-gitops knows" in result.output
    assert _Counter.requests == []


def test_a_pointer_to_nothing_is_the_schemas_fault(repo: Repo) -> None:
    result = _with_schema(repo, '{"properties": {"header": {"$ref": "#/$defs/missing"}}}')
    assert result.exit_code == 2
    assert result.output.startswith("filters.yaml:8:13: filters[0].config: the schema's $ref '#/$defs/missing' "
                                    "points at nothing in filters/s.schema.json; fix the schema"), result.output


@pytest.mark.parametrize(("schema", "message"), [
    ('{"type": "object", "minProperties": -1}', "it is not a valid JSON Schema (draft 2020-12): at /minProperties:"),
    ('{"$schema": "http://json-schema.org/draft-04/schema#", "exclusiveMaximum": 3}',
     "it is not a valid JSON Schema (draft 4): at /exclusiveMaximum: 3 is not of type 'boolean'"),
    ('{"patternProperties": {"(": {}}}', "it is not a valid JSON Schema (draft 2020-12): at /patternProperties:"),
    ('{"$schema": ["x"]}', "its $schema ['x'] is not a JSON Schema draft wasm-gitops knows"),
    ('[{"type": "string"}]', "a JSON Schema is a map (or true/false), not list"),
    ('{"type": "object", "maximum": NaN}', "it holds NaN, which is not JSON"),
    ('[' * 100_000 + ']' * 100_000, "it is nested too deeply"),
    (b'{"title": "\xff"}', "it is not UTF-8 (byte 11)"),
])
def test_what_is_not_a_schema_is_refused_at_the_configschema_line(repo: Repo, schema: str | bytes,
                                                                   message: str) -> None:
    repo.write("filters/s.schema.json", schema)
    result = _with_schema(repo, schema) if isinstance(schema, str) else None
    if result is None:
        repo.write("filters.yaml", HEAD + "filters:\n  - name: example-filter\n    wasm: filters/example-filter.wasm\n"
                   "    configSchema: filters/s.schema.json\n" + SERVICE)
        result = repo.cli("validate")
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("filters.yaml:7:19: configSchema 'filters/s.schema.json': " + message), line


def test_files_that_are_not_schemas_are_refused_without_reading_them(repo: Repo) -> None:
    big = repo.root / "filters" / "big.schema.json"
    with open(big, "wb") as f:
        f.truncate(config_schema.MAX_SCHEMA_BYTES + 1)  # sparse: nothing of it may be read
    os.mkfifo(repo.root / "filters" / "fifo.schema.json")
    (repo.root / "filters" / "dir.schema.json").mkdir()
    for name, message in (("big", f"is 1,048,577 bytes, more than the {config_schema.MAX_SCHEMA_BYTES:,}"),
                          ("fifo", "is a FIFO (named pipe), not a file"), ("dir", "is a directory")):
        repo.write("filters.yaml", HEAD + "filters:\n  - name: example-filter\n    wasm: filters/example-filter.wasm\n"
                   f"    configSchema: filters/{name}.schema.json\n" + SERVICE)
        result = repo.cli("validate")
        assert result.exit_code == 2
        assert result.output.startswith(f"filters.yaml:7:19: configSchema 'filters/{name}.schema.json' {message}")


# ------------------------------------------------------------------ Higress spec.yaml

HIGRESS = """apiVersion: 1.0.0
info: {category: custom, name: blocker, version: 0.1.0}
spec:
  phase: UNSPECIFIED_PHASE
  priority: 10
  configSchema:
    openAPIV3Schema:
      type: object
      properties:
        block_urls: {type: array, items: {type: string}}
"""


def test_a_spec_yaml_beside_the_wasm_is_the_schema_unless_one_is_named(repo: Repo) -> None:
    repo.write("filters/blocker/plugin.wasm", (repo.root / "filters" / "example-filter.wasm").read_bytes())
    repo.write("filters/blocker/spec.yaml", HIGRESS)
    repo.write("filters/blocker/strict.schema.json", '{"type": "object", "required": ["allow"]}')
    body = HEAD + "filters:\n  - name: example-filter\n    wasm: filters/blocker/plugin.wasm\nEXTRA" \
        "    config: {block_urls: [1]}\n" + SERVICE
    repo.write("filters.yaml", body.replace("EXTRA", ""))
    result = repo.cli("validate")
    assert result.exit_code == 2
    assert result.output == ("filters.yaml:7:27: filters[0].config: at $.block_urls[0]: 1 is not of type 'string' "
                             "(filters/blocker/spec.yaml, /properties/block_urls/items/type); make the configuration "
                             "match the filter's schema\n")
    repo.write("filters.yaml", body.replace("EXTRA", "    configSchema: filters/blocker/strict.schema.json\n"))
    result = repo.cli("validate")
    assert result.exit_code == 2
    assert "at $: 'allow' is a required property (filters/blocker/strict.schema.json, /required)" in result.output
    assert "spec.yaml" not in result.output


def test_a_spec_yaml_that_links_out_of_the_repository_is_refused(repo: Repo, tmp_path: Path) -> None:
    outside = tmp_path / "spec.yaml"
    outside.write_text(HIGRESS)
    repo.write("filters/blocker/plugin.wasm", (repo.root / "filters" / "example-filter.wasm").read_bytes())
    (repo.root / "filters" / "blocker" / "spec.yaml").symlink_to(outside)
    repo.write("filters.yaml", HEAD + "filters:\n  - name: example-filter\n    wasm: filters/blocker/plugin.wasm\n"
               + SERVICE)
    result = repo.cli("validate")
    assert result.exit_code == 2
    assert result.output == ("filters.yaml:6:11: spec.yaml 'filters/blocker/spec.yaml' leads outside the repository; "
                             "keep it inside the directory of filters.yaml (symlinks included)\n")
