"""The spec's JSON Schema is the one source of truth: complete, closed, documented, and the very file
the package reads and editors point at."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import jsonschema
from conftest import REPO

SCHEMA_PATH = REPO / "schemas" / "filters.schema.json"


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def _target(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs to the schema they name."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = root
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def test_it_is_a_valid_draft_2020_12_schema() -> None:
    s = schema()
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(s)


def test_every_object_is_closed() -> None:
    s = schema()
    for path, node in _walk(s, "#"):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"


def test_every_property_has_a_description() -> None:
    s = schema()
    missing = []
    for path, node in _walk(s, "#"):
        for name, prop in (node.get("properties") or {}).items():
            if not isinstance(prop, dict) or path.endswith("/properties"):
                continue
            if "description" not in prop and "description" not in _target(s, prop):
                missing.append(f"{path}/properties/{name}")
    assert missing == []


def test_the_package_reads_the_very_same_file() -> None:
    packaged = resources.files("renderer").joinpath("schemas", "filters.schema.json").read_bytes()
    assert packaged == SCHEMA_PATH.read_bytes()


def test_the_example_spec_points_editors_at_it() -> None:
    first = (REPO / "filters.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=schemas/filters.schema.json"
    assert (REPO / "schemas/filters.schema.json").is_file()


def test_the_example_spec_is_valid_against_the_schema_alone() -> None:
    import yaml

    jsonschema.Draft202012Validator(schema()).validate(yaml.safe_load((REPO / "filters.yaml").read_text()))
