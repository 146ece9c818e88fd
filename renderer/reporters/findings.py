"""Findings (an invalid spec's problems, a valid one's warnings) and drift (what check found), as text,
json or GitHub annotations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..clusters import ClusterChange, changes_line
from ..errors import Finding
from ..output import Changes
from .base import AS_GIVEN, Locator, document, escape_data, escape_property, reporter


def finding_line(f: Finding, where: Locator = AS_GIVEN) -> str:
    prefix = "" if f.severity == "error" else "warning: "
    return f"{where.finding_file(f)}:{f.line}:{f.column}: {prefix}{f.message}"


def finding_records(items: Sequence[Finding], where: Locator = AS_GIVEN) -> list[dict[str, Any]]:
    return [{"file": where.finding_file(f), "line": f.line, "column": f.column, "severity": f.severity,
             "path": f.path, "message": f.message} for f in items]


@reporter("findings", "text")
def text_findings(items: Sequence[Finding], where: Locator = AS_GIVEN) -> str:
    return "".join(f"{finding_line(f, where)}\n" for f in items)


@reporter("findings", "json")
def json_findings(items: Sequence[Finding], where: Locator = AS_GIVEN) -> str:
    """validate's JSON document."""
    return document({"valid": not any(f.severity == "error" for f in items),
                     "problems": finding_records(items, where)})


@reporter("findings", "github")
def github_findings(items: Sequence[Finding], where: Locator = AS_GIVEN) -> str:
    return "".join(
        f"::{f.severity} file={escape_property(where.finding_file(f, annotation=True))},line={f.line},"
        f"col={f.column}::{escape_data(f.message)}\n" for f in items)


def changes_summary(ch: Changes) -> str:
    return (f"{len(ch.added)} added, {len(ch.changed)} changed, {len(ch.removed)} removed, "
            f"{len(ch.unchanged)} unchanged")


def _rows(ch: Changes) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [("added", p) for p in ch.added] + [("changed", p) for p in ch.changed]
    return rows + [("stale", p) for p in ch.removed]


@reporter("drift", "json")
def json_drift(ch: Changes, *, interrupted: bool = False, where: Locator = AS_GIVEN,
               warnings: Sequence[Finding] = (), clusters: Sequence[ClusterChange] = ()) -> str:
    return document({"valid": True, "clean": not _rows(ch) and not ch.hand_edited and not interrupted,
                     "interrupted_render": interrupted,
                     "added": ch.added, "changed": ch.changed, "stale": ch.removed,
                     "edited_by_hand": ch.hand_edited, "problems": finding_records(warnings, where),
                     **({"clusters": [c.as_dict() for c in clusters]} if clusters else {})})


@reporter("drift", "github")
def github_drift(ch: Changes, *, interrupted: bool = False, where: Locator = AS_GIVEN,
                 warnings: Sequence[Finding] = (), clusters: Sequence[ClusterChange] = ()) -> str:
    lines: list[str] = []
    for state, p in _rows(ch):
        lines.append(f"::error file={escape_property(where.tree_file(p, annotation=True))}::{state}: "
                     f"{escape_data(_advice(state))}")
    for p in ch.hand_edited:
        lines.append(f"::error file={escape_property(where.tree_file(p, annotation=True))}::generated file "
                     "edited by hand; change filters.yaml instead")
    if interrupted:
        lines.append("::error::a render was interrupted; run 'wasm-gitops render' to finish it")
    return github_findings(warnings, where) + "".join(line + "\n" for line in lines)


@reporter("drift", "text")
def text_drift(ch: Changes, *, interrupted: bool = False, where: Locator = AS_GIVEN,
               warnings: Sequence[Finding] = (), clusters: Sequence[ClusterChange] = ()) -> str:
    """What differs, one file a line; the warnings go to stderr on their own (see cli)."""
    lines = [f"{state:8} {where.tree_file(p)}" for state, p in _rows(ch)]
    for p in ch.hand_edited:
        lines.append(f"edited   {where.tree_file(p)}: generated file edited by hand; change filters.yaml instead "
                     "(render overwrites it)")
    if interrupted:
        lines.append("a render was interrupted after its commit point; run 'wasm-gitops render' to "
                     "finish it")
    if lines:
        if clusters:
            lines.append(changes_line(tuple(clusters)))
        lines.append(f"out of date: {changes_summary(ch)}; run 'wasm-gitops render' and commit the result")
    return "".join(line + "\n" for line in lines)


def _advice(state: str) -> str:
    return {"added": "render would create this file", "changed": "render would change this file",
            "stale": "render would remove this file"}[state]


# An invalid spec, reported by a command that takes --format: the findings' own formats, except that
# the json document of check and diff also says the output is not clean.
@reporter("problems", "text")
def text_problems(items: Sequence[Finding], where: Locator = AS_GIVEN, command: str = "validate") -> str:
    return text_findings(items, where)


@reporter("problems", "json")
def json_problems(items: Sequence[Finding], where: Locator = AS_GIVEN, command: str = "validate") -> str:
    fields: dict[str, Any] = {"valid": False, "problems": finding_records(items, where)}
    if command != "validate":
        fields["clean"] = False
    return document(fields)


@reporter("problems", "github")
def github_problems(items: Sequence[Finding], where: Locator = AS_GIVEN, command: str = "validate") -> str:
    return github_findings(items, where)
