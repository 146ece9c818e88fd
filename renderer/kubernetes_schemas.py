"""The Kubernetes JSON Schemas the rendered objects are checked against, and their compiled validators.

schemas/kubernetes-<major>.<minor>.json holds the strict schemas of the kinds in
conformance.SCHEMAS and the definitions they reach, cut by scripts/kubernetes-schemas.py from
kubernetes-validate's files (the file names its source). Each schema compiles twice: jsonschema-rs
answers "valid?" about 100x faster; only an invalid object pays for the Python validator, whose errors
carry the paths the report needs. Every loader is cached: a render validates thousands of objects.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import jsonschema_rs

from .files import schema_text

if TYPE_CHECKING:  # the Python validator is imported only when an object fails (it costs ~0.1 s)
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry

__all__ = [
    "DEFAULT_KUBERNETES_VERSION",
    "available_kubernetes_versions",
    "definition_fast",
    "definition_validator",
    "fast_formats",
    "format_checker",
    "kind_fast",
    "kind_validator",
    "reachable_definitions",
    "resolve_version",
]

# The Kubernetes release whose schemas are committed in schemas/ (kubernetes-validate 1.37's x.y.0
# schemas). Pinned, and regenerated only on purpose, so that no upgrade can change our output's
# verdict silently; ConfigMap and apps/v1 Deployment have been stable for years anyway.
DEFAULT_KUBERNETES_VERSION: Final = "1.37"
_K8S_DEFINITIONS_URI: Final = "https://kubernetes.io/api/_definitions.json"


# ---- formats the Kubernetes schemas declare but jsonschema does not check by default ----------

@functools.cache
def format_checker() -> FormatChecker:
    from jsonschema import FormatChecker

    checker = FormatChecker(formats=())

    @checker.checks("byte", raises=(binascii.Error, ValueError))
    def _is_base64(instance: object) -> bool:
        # ConfigMap.binaryData values: the API server rejects anything that is not padded base64.
        if isinstance(instance, str):
            base64.b64decode(instance, validate=True)
        return True

    @checker.checks("int32")
    def _is_int32(instance: object) -> bool:
        return not isinstance(instance, int) or -(2**31) <= instance < 2**31

    @checker.checks("int64")
    def _is_int64(instance: object) -> bool:
        return not isinstance(instance, int) or -(2**63) <= instance < 2**63

    return checker


# ---- loading: the file is read and parsed once a run, each schema compiled once --------------

# Beside schema_text's files: renderer/schemas is the repository's schemas/ (a symlink in a checkout).
_KUBERNETES_SCHEMA_DIR: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")
_KUBERNETES_SCHEMA_FILE = re.compile(r"kubernetes-(\d+)\.(\d+)\.json")


@functools.cache
def available_kubernetes_versions() -> tuple[tuple[int, int], ...]:
    """(major, minor) of every Kubernetes release whose schemas are in schemas/."""
    found = set()
    for entry in os.listdir(_KUBERNETES_SCHEMA_DIR):
        match = _KUBERNETES_SCHEMA_FILE.fullmatch(entry)
        if match:
            found.add((int(match.group(1)), int(match.group(2))))
    return tuple(sorted(found))


@functools.lru_cache(maxsize=16)  # validate_objects runs once per overlay: thousands of times a render
def resolve_version(text: str) -> tuple[int, int]:
    # Use the newest schema not newer than the request (x.y.0 schemas only), compared numerically
    # (as strings "1.9" > "1.37").
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?", text.strip())
    if match is None:
        raise ValueError(f"not a Kubernetes version: {text!r} (expected e.g. 1.30 or v1.30.2)")
    wanted = (int(match.group(1)), int(match.group(2)))
    shipped = available_kubernetes_versions()
    usable = [v for v in shipped if v <= wanted]
    if not usable or wanted > shipped[-1]:
        names = [f"{major}.{minor}" for major, minor in shipped]
        span = "none" if not names else f"only {names[0]}" if len(names) == 1 else f"{names[0]}..{names[-1]}"
        raise ValueError(f"wasm-gitops has no schemas for Kubernetes {text} (it ships {span})")
    return usable[-1]


@functools.cache
def _kubernetes_bundle(version: tuple[int, int]) -> dict[str, Any]:
    text = schema_text(f"kubernetes-{version[0]}.{version[1]}.json")
    bundle: dict[str, Any] = json.loads(text)
    return bundle


def _strip_required(node: Any, *, names: bool = False) -> Any:
    """Copy of a schema without `required` keywords.

    `names` is True when node maps property (or definition) names to schemas; there a key called
    "required" is a field name (JSONSchemaProps has one) and must stay.
    """
    if isinstance(node, list):
        return [_strip_required(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if not names and key == "required" and isinstance(value, list):
            continue
        result[key] = _strip_required(value, names=not names and key in ("properties", "$defs", "definitions",
                                                                          "patternProperties", "dependentSchemas"))
    return result


@functools.cache
def _kubernetes_definitions(version: tuple[int, int], partial: bool) -> dict[str, Any]:
    if partial:  # derived from the full set, so the file is read and parsed once
        return _strip_required(_kubernetes_definitions(version, False))
    definitions: dict[str, Any] = _kubernetes_bundle(version)["definitions"]
    return definitions


@functools.cache
def _kubernetes_registry(version: tuple[int, int], partial: bool) -> Registry:
    from referencing import Registry, Resource

    definitions = _kubernetes_definitions(version, partial)
    return Registry().with_resource(_K8S_DEFINITIONS_URI, Resource.from_contents(definitions))


@functools.cache
def _kubernetes_schema(api_version: str, kind: str, version: tuple[int, int], partial: bool) -> dict[str, Any]:
    schema: dict[str, Any] | None = _kubernetes_bundle(version)["kinds"].get(f"{api_version} {kind}")
    if schema is None:
        raise LookupError(f"schemas/kubernetes-{version[0]}.{version[1]}.json has no schema for {api_version} {kind}"
                          " (add the kind to SCHEMAS, then run make kubernetes-schemas)")
    return _strip_required(schema) if partial else schema


@functools.cache
def kind_validator(api_version: str, kind: str, version: tuple[int, int], partial: bool) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = _kubernetes_schema(api_version, kind, version, partial)
    return Draft202012Validator(schema, registry=_kubernetes_registry(version, partial), format_checker=format_checker())


def fast_formats() -> dict[str, Any]:
    return {"byte": _is_base64_text}


@functools.lru_cache(maxsize=256)
def _is_base64_text(value: str) -> bool:
    # Cached: one binary's base64 text is shared by its ConfigMap in every namespace (a str caches
    # its own hash, so a repeat costs a lookup, not a decode of hundreds of kilobytes).
    try:
        base64.b64decode(value, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


@functools.cache
def kind_fast(api_version: str, kind: str, version: tuple[int, int], partial: bool) -> Any:
    """The same schema compiled by jsonschema-rs: ~100x faster to say "valid". Only an invalid object
    pays for the Python validator, whose errors carry the paths we report."""
    schema = _kubernetes_schema(api_version, kind, version, partial)
    return jsonschema_rs.Draft202012Validator(schema, registry=_fast_registry(schema, version, partial),
                                              formats=fast_formats(), validate_formats=True)


@functools.cache
def definition_fast(definition: str, version: tuple[int, int]) -> Any:
    schema = {"$ref": f"{_K8S_DEFINITIONS_URI}#/$defs/{definition}"}
    return jsonschema_rs.Draft202012Validator(schema, registry=_fast_registry(schema, version, False),
                                              formats=fast_formats(), validate_formats=True)


_DEFINITION_REF = re.compile(r"#/\$defs/([^\"]+)")


def reachable_definitions(schema: object, definitions: Mapping[str, Any]) -> list[str]:
    """Names of the `definitions` that `schema` reaches through $ref, transitively, sorted; a name
    missing from `definitions` is left out (a dangling $ref fails validation on its own)."""
    reached: set[str] = set()
    pending = _DEFINITION_REF.findall(json.dumps(schema))
    while pending:
        name = pending.pop()
        if name not in reached and name in definitions:
            reached.add(name)
            pending.extend(_DEFINITION_REF.findall(json.dumps(definitions[name])))
    return sorted(reached)


def _fast_registry(schema: Mapping[str, Any], version: tuple[int, int], partial: bool) -> Any:
    """A jsonschema-rs registry of just the definitions `schema` can reach (a ConfigMap reaches 5 of
    the 120 committed; of Kubernetes' full 862, 1.8 MB, handing over all cost ~20 ms per validator)."""
    everything = _kubernetes_definitions(version, False)["$defs"]
    subset = {"$defs": {name: everything[name] for name in reachable_definitions(schema, everything)}}
    return jsonschema_rs.Registry([(_K8S_DEFINITIONS_URI, _strip_required(subset) if partial else subset)])


@functools.cache
def definition_validator(definition: str, version: tuple[int, int]) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = {"$ref": f"{_K8S_DEFINITIONS_URI}#/$defs/{definition}"}
    return Draft202012Validator(schema, registry=_kubernetes_registry(version, False), format_checker=format_checker())
