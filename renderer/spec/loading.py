"""Reading filters.yaml with positions, and the JSON Schema check: what every command needs first."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

from ..errors import Finding, SpecError, UsageError
from ..files import NotAFile, TooLarge, read_file, schema_text
from ..model import SCHEMA_FILE, BuildTarget
from ..schema_errors import SPEC
from ..workloads import PathProblem, inside
from ..yamlio import MAX_SPEC_BYTES, Document, SpecSyntaxError, load_document


@cache
def load_schema(name: str = SCHEMA_FILE) -> dict[str, Any]:
    return json.loads(schema_text(name))


@cache
def _validator() -> Any:
    import jsonschema  # only an invalid spec needs it (and its import costs ~0.1 s)

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


@cache
def _fast_validator() -> Any:
    return jsonschema_rs.validator_for(load_schema())


def read_spec_text(spec_path: Path, display: str) -> bytes:
    try:
        return read_file(os.fspath(spec_path), MAX_SPEC_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{spec_path}: no such file; create one with 'wasm-gitops init'") from None
    except IsADirectoryError:
        raise UsageError(f"{spec_path}: is a directory; pass the spec file with -f") from None
    except NotAFile as e:
        raise UsageError(f"{spec_path}: is {e.kind}, not a file; pass the spec file with -f") from None
    except TooLarge as e:
        raise SpecError([Finding(display, 1, 1, f"file is {e.size:,} bytes, more than the "
                                 f"{MAX_SPEC_BYTES:,} accepted; split or shorten it")]) from None
    except OSError as e:
        raise UsageError(f"{spec_path}: cannot read it: {e.strerror}") from None


def parse(spec_path: Path, display: str | None = None) -> Document:
    name = display or spec_path.name
    text = read_spec_text(spec_path, name)
    try:
        return load_document(text, name)
    except SpecSyntaxError as e:
        raise SpecError(e.findings) from None


def schema_findings(doc: Document) -> list[Finding]:
    # jsonschema-rs answers "valid?" ~100x faster; only an invalid spec pays for the Python
    # validator, whose errors carry the paths we turn into positions.
    if _fast_validator().is_valid(doc.data):
        return []
    return [doc.finding(problem.path, problem.message, key=problem.key)
            for error in _validator().iter_errors(doc.data) for problem in SPEC.explain(error)]


def parse_valid(spec_path: Path) -> Document:
    """The spec read and checked against the schema only: for commands that need its filters before
    (or without) their binaries, such as build, package and push."""
    doc = parse(spec_path)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.finding((), "the document must be a map")])
    errors = schema_findings(doc)
    if errors:
        raise SpecError(errors)
    return doc


def require_filters(doc: Document, names: Sequence[str], spec_path: Path) -> None:
    """Refuse names (in the order given) that no filter of a schema-valid spec has."""
    known = {f["name"] for f in doc.data["filters"]}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no filter named {', '.join(unknown)} in {spec_path}")


def load_build_targets(spec_path: Path, names: Iterable[str] = ()) -> list[BuildTarget]:
    """The filters with a build: section. Needs a valid spec, but not the binaries (not built yet)."""
    doc = parse_valid(spec_path)
    root = spec_path.parent.resolve()
    wanted = set(names)
    require_filters(doc, sorted(wanted), spec_path)
    targets: list[BuildTarget] = []
    findings: list[Finding] = []
    for i, raw in enumerate(doc.data["filters"]):
        if "build" not in raw or (wanted and raw["name"] not in wanted):
            continue
        try:
            context = inside(root, raw["build"]["context"], "build context")
            wasm = inside(root, raw["wasm"], "wasm")
        except PathProblem as e:
            findings.append(doc.finding(("filters", i, "build"), str(e)))
            continue
        targets.append(BuildTarget(raw["name"], context, raw["build"].get("image"), wasm))
    if findings:
        raise SpecError(findings)
    return targets
