"""A committed `cost --json` report, read back for the pull request comment: one line per service.

The report comes from the pull request like everything else, so it is read like any input (no FIFO,
size checked first, nesting bounded), checked against its own schema before any field is used, and
only the schema's typed values reach the comment; a report of another schemaVersion is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError
from ..files import read_file, schema_text
from ..reporters.cost import cost_line
from ..safepath import load_json

SCHEMA = "cost-report.schema.json"
REPORT_LIMIT = 16 * 1024 * 1024  # a report of 1,000 services with every run is ~5 MB


def read_cost_lines(path: Path) -> dict[str, str]:
    """Service name -> its cost line, from a `wasm-gitops cost --json` report file."""
    import jsonschema  # only a diff given a report pays for the import

    try:
        doc = load_json(read_file(os.fspath(path), REPORT_LIMIT))
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read it as a cost report ({e}); write it with "
                         "'wasm-gitops cost --json > FILE'") from None
    if isinstance(doc, dict) and doc.get("schemaVersion") != 1:
        raise UsageError(f"{path}: schemaVersion {doc.get('schemaVersion')!r} is not one this wasm-gitops reads "
                         "(1); produce it again with this version's 'wasm-gitops cost --json'")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(json.loads(schema_text(SCHEMA))).iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise UsageError(f"{path}: not a cost report at {where}: {error.message[:200]}")
    assert isinstance(doc, dict)  # the schema says so
    machine = doc["machine"]
    prefix = f"cost ({machine['cores']} cores, Envoy {machine['envoyVersion']}, {machine['loadGenerator']})"
    return {entry["service"]: f"{prefix}: {cost_line(entry)}" for entry in doc["services"]}
