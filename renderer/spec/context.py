"""What every meaning check shares: the document, where it lives, and the findings collected so far."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config_schema, istio_versions
from ..errors import Finding
from ..schema_errors import where
from ..yamlio import Document

Path_ = tuple[str | int, ...]


@dataclass
class SpecContext:
    doc: Document
    spec_path: Path
    root: Path  # the spec's directory, resolved: every local path must stay inside it
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data  # load_spec checked that it is a map

    def error(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.errors.append(self.doc.finding(path, message, key=key))

    def warn(self, path: Path_, message: str) -> None:
        self.warnings.append(self.doc.finding(path, message, severity="warning"))

    def unique(self, path: Path_, kind: str, name: str, seen: set[str], why: str = "") -> bool:
        """Whether `name` is the first `kind` of that name; a later one is reported (`why` says what it names)."""
        if name in seen:
            self.error(path, f"{kind} name {name!r} is used twice; {kind} names must be unique{why}")
            return False
        seen.add(name)
        return True

    def config_text(self, path: Path_, value: Any) -> str | None:
        """A configuration as delivered: a string as written, anything else as compact JSON."""
        if value is None:
            return None
        if isinstance(value, str):
            return value
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:
            self.error(path, f"{where(path)} holds .inf or .nan, which JSON cannot carry; use a string or a "
                       "finite number")
            return None

    def check_config(self, path: Path_, raw: dict[str, Any], key: str, schema: config_schema.ConfigSchema) -> None:
        if key not in raw or raw[key] is None:
            return
        for problem in config_schema.check(schema, raw[key]):
            self.error(path + problem.path, f"{where(path)}: {problem.message}", key=problem.key)

    def istio(self, path: Path_, text: str) -> tuple[int, int] | None:
        """The Istio release a spec or a cluster targets, or None (reported) when it cannot run Wasm."""
        version = istio_versions.parse_version(text)
        if version is None or version < (1, 5) or version[0] != 1:
            self.error(path, f"istio: {text!r} has no Wasm support this tool can render (Wasm filters arrived "
                       "in Istio 1.5); target 1.5 or later")
            return None
        return version


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
