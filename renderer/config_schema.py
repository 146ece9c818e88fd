"""A filter's configuration schema: read from the repository as untrusted input, checked against its
meta-schema, then used to check every configuration the spec gives the filter.

Two sources: a JSON Schema file (`configSchema:`), or the `spec.configSchema.openAPIV3Schema` of a
Higress plugin `spec.yaml` (the metadata hgctl writes beside a plugin and pushes with its image).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import NotAFile, TooLarge, read_file
from .schema_errors import Problem, config_dialect, one_line, schema_pointer
from .workloads import PathProblem, inside_stat
from .yamlio import SpecSyntaxError, load_document

# A schema is a few kilobytes; a megabyte is a mistake (or an attempt to make validation slow).
MAX_SCHEMA_BYTES = 1024 * 1024
HIGRESS_SPEC = "spec.yaml"
# One configuration with hundreds of mistakes is one mistake repeated: the first ones say it.
MAX_ERRORS_PER_CONFIG = 20
# Keywords whose values are data, not schemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples", "example"})


class SchemaProblem(Exception):
    """The schema cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ConfigSchema:
    source: str  # the file as filters.yaml names it (relative to filters.yaml)
    draft: str
    schema: Any = field(compare=False, repr=False)
    validator: Any = field(compare=False, repr=False)


# A problem with one configuration; its path is inside the configuration (() for the whole of it).
ConfigError = Problem


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SchemaProblem(f"the key {key!r} appears twice in one object (JSON readers disagree on "
                                "which one counts); remove one")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise SchemaProblem(f"it holds {name}, which is not JSON; use a number")


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise SchemaProblem(f"it is not JSON ({e.msg} at line {e.lineno} column {e.colno}); write the "
                            "schema as JSON, or as a Higress spec.yaml") from None
    except RecursionError:
        raise SchemaProblem("it is nested too deeply to read") from None


def _higress_schema(text: bytes, name: str) -> Any:
    try:
        doc = load_document(text, name)
    except SpecSyntaxError as e:
        first = e.findings[0]
        raise SchemaProblem(f"it is not valid YAML ({first.line}:{first.column}: {first.message})") from None
    data = doc.data
    found = data
    for key in ("spec", "configSchema", "openAPIV3Schema"):
        if not isinstance(found, dict) or key not in found:
            raise SchemaProblem("it has no spec.configSchema.openAPIV3Schema (the layout of a Higress plugin's "
                                "spec.yaml); add the schema there or point configSchema at a JSON Schema file")
        found = found[key]
    return found


def _external_refs(schema: Any, pointer: str = "") -> Iterator[tuple[str, str]]:
    """Every $ref (and $dynamicRef) that leaves the document: wasm-gitops never fetches one."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            here = f"{pointer}/{key}"
            if key in ("$ref", "$dynamicRef", "$recursiveRef") and isinstance(value, str):
                if not value.startswith("#"):
                    yield here, value
            elif key not in _DATA_KEYWORDS:
                yield from _external_refs(value, here)
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from _external_refs(item, f"{pointer}/{i}")




def _no_retrieval(uri: str) -> Any:
    import referencing.exceptions

    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


def _build_validator(schema: Any, openapi: bool) -> tuple[Any, str]:
    import jsonschema  # only specs with a configSchema pay for its import
    import referencing

    if not isinstance(schema, (dict, bool)):
        raise SchemaProblem("a JSON Schema is a map (or true/false), not "
                            f"{type(schema).__name__}; fix the schema")
    # An OpenAPI 3.0 schema (what a Higress spec.yaml and a Kubernetes CRD hold) is JSON Schema draft 4
    # with extensions: boolean exclusiveMinimum, no $schema. A plain file says its draft, else 2020-12.
    if openapi:
        cls: Any = jsonschema.Draft4Validator
    elif isinstance(schema, dict) and "$schema" in schema:
        # An unknown $schema would make jsonschema warn and fall back to the newest draft: say so instead.
        known = isinstance(schema["$schema"], str)  # a list here would be unhashable in jsonschema's lookup
        cls = jsonschema.validators.validator_for(schema, default=None) if known else None
        if cls is None:
            raise SchemaProblem(f"its $schema {schema['$schema']!r} is not a JSON Schema draft wasm-gitops knows "
                                "(draft 3, 4, 6, 7, 2019-09, 2020-12: https://json-schema.org/draft/2020-12/schema); "
                                "fix it or remove it")
    else:
        cls = jsonschema.Draft202012Validator
    draft = cls.META_SCHEMA.get("$schema", "") if isinstance(cls.META_SCHEMA, dict) else ""
    for where, ref in _external_refs(schema):
        raise SchemaProblem(f"{where} refers to {ref!r}, outside the file; wasm-gitops never fetches a "
                            "schema: copy what it needs under $defs and refer to it as '#/$defs/...'")
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise SchemaProblem(f"it is not a valid JSON Schema ({_draft_name(draft)}): at "
                            f"{schema_pointer(e.path)}: {one_line(e.message)}; fix the schema") from None
    except RecursionError:
        raise SchemaProblem("it is nested too deeply to check") from None
    # The jsonschema default registry fetches unknown URIs over HTTP; this one refuses every one.
    registry: Any = referencing.Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]
    return cls(schema, registry=registry), draft


def _draft_name(uri: str) -> str:
    match = re.search(r"draft-0?(\d+)|draft/(\d{4}-\d{2})", uri)
    if not match:
        return uri or "unknown draft"
    return f"draft {match.group(1) or match.group(2)}"






def load(root: Path, relative: str, *, what: str = "configSchema") -> ConfigSchema:
    """The schema a filter names, relative to the spec's (real) directory; a JSON file, or a Higress
    spec.yaml when the name says so. Raises SchemaProblem or PathProblem with the reason."""
    path, mode = inside_stat(root, relative, what)
    if mode is None:
        raise SchemaProblem(f"{what} {relative!r} does not exist; fix the path (relative to filters.yaml)")
    try:
        data = read_file(os.fspath(path), MAX_SCHEMA_BYTES)
    except TooLarge as e:
        raise SchemaProblem(f"{what} {relative!r} is {e.size:,} bytes, more than the {MAX_SCHEMA_BYTES:,} a "
                            "schema may have here; shorten it") from None
    except NotAFile as e:
        raise SchemaProblem(f"{what} {relative!r} is {e.kind}, not a file; point it at the schema") from None
    except IsADirectoryError:
        raise SchemaProblem(f"{what} {relative!r} is a directory; point it at the schema file") from None
    except OSError as e:
        raise SchemaProblem(f"{what} {relative!r} cannot be read ({e.strerror}); fix its permissions") from None
    higress = relative.endswith((".yaml", ".yml"))  # a Higress spec.yaml; JSON Schema files are JSON
    try:
        if higress:
            schema = _higress_schema(data, relative)
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SchemaProblem(f"it is not UTF-8 (byte {e.start})") from None
            schema = _parse_json(text)
        validator, draft = _build_validator(schema, openapi=higress)
    except SchemaProblem as e:
        raise SchemaProblem(f"{what} {relative!r}: {e}") from None
    return ConfigSchema(relative, draft, schema, validator)


def beside(root: Path, wasm: str) -> str | None:
    """The Higress spec.yaml next to a local .wasm, as a path relative to filters.yaml, if there is one."""
    parent = os.path.dirname(wasm)
    candidate = f"{parent}/{HIGRESS_SPEC}" if parent else HIGRESS_SPEC
    try:
        _, mode = inside_stat(root, candidate, "spec.yaml")
    except PathProblem:
        return candidate  # a link out of the repository: load() says so, where the filter is
    return candidate if mode is not None else None


def _config_instance(value: Any) -> tuple[Any, bool]:
    """What the filter will parse: a string config is sent as it is, so JSON text inside it is what
    the schema describes. Returns the instance and whether it came out of a string."""
    if isinstance(value, str):
        try:
            return json.loads(value), True
        except (ValueError, RecursionError):
            return value, False
    return value, False


def check(schema: ConfigSchema, value: Any) -> list[ConfigError]:
    """Every way `value` breaks the schema, each at its path inside the configuration."""
    import referencing.exceptions

    instance, from_string = _config_instance(value)
    out: list[ConfigError] = []
    try:
        errors = sorted(schema.validator.iter_errors(instance),
                        key=lambda e: (tuple(str(p) for p in e.absolute_path), e.message))
    except referencing.exceptions.Unresolvable as e:  # only in-document refs are left; a bad pointer
        ref = str(getattr(e, "ref", ""))
        ref = ref if ref.startswith("#") else "#" + ref  # referencing keeps the pointer without its '#'
        return [ConfigError((), f"the schema's $ref {ref!r} points at nothing in "
                            f"{schema.source}; fix the schema")]
    except RecursionError:
        return [ConfigError((), f"the configuration or {schema.source} is nested too deeply to check")]
    dialect = config_dialect(schema.source, from_string)
    for error in errors:
        out += dialect.explain(error)
    if len(out) > MAX_ERRORS_PER_CONFIG:
        rest = len(out) - MAX_ERRORS_PER_CONFIG
        out = out[:MAX_ERRORS_PER_CONFIG] + [ConfigError((), f"and {rest} more problem{'s' if rest != 1 else ''} "
                                                          "with this configuration; fix the ones above first")]
    return out
