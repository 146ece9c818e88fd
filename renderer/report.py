"""Reporters, chosen by name: findings and output changes as text, json or GitHub annotations."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .errors import Finding
from .output import Changes

FORMATS = ("text", "json", "github")


def _escape_github(text: str) -> str:
    # GitHub workflow commands: data must escape %, CR and LF.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def findings(items: Sequence[Finding], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"problems": [
            {"file": f.file, "line": f.line, "column": f.column, "severity": f.severity,
             "path": f.path, "message": f.message} for f in items]}, indent=2, sort_keys=True) + "\n"
    if fmt == "github":
        return "".join(
            f"::{f.severity} file={f.file},line={f.line},col={f.column}::{_escape_github(f.message)}\n"
            for f in items)
    return "".join(f"{f}\n" for f in items)


def changes_summary(ch: Changes) -> str:
    return (f"{len(ch.added)} added, {len(ch.changed)} changed, {len(ch.removed)} removed, "
            f"{len(ch.unchanged)} unchanged")


def drift(ch: Changes, fmt: str, *, interrupted: bool = False, out_label: str = ".") -> str:
    rows: list[tuple[str, str]] = [("added", p) for p in ch.added] + [("changed", p) for p in ch.changed]
    rows += [("stale", p) for p in ch.removed]
    edited = ch.hand_edited
    if fmt == "json":
        return json.dumps({"clean": not rows and not edited and not interrupted,
                           "interrupted_render": interrupted,
                           "added": ch.added, "changed": ch.changed, "stale": ch.removed,
                           "edited_by_hand": edited}, indent=2, sort_keys=True) + "\n"
    lines: list[str] = []
    if fmt == "github":
        for state, p in rows:
            lines.append(f"::error file={p}::{state}: {_escape_github(_advice(state))}")
        for p in edited:
            lines.append(f"::error file={p}::generated file edited by hand; change filters.yaml instead")
        if interrupted:
            lines.append("::error::a render was interrupted; run 'wasm-gitops render' to finish it")
        return "".join(line + "\n" for line in lines)
    for state, p in rows:
        lines.append(f"{state:8} {p}")
    for p in edited:
        lines.append(f"edited   {p}: generated file edited by hand; change filters.yaml instead "
                     "(render overwrites it)")
    if interrupted:
        lines.append("a render was interrupted after its commit point; run 'wasm-gitops render' to "
                     "finish it")
    if lines:
        lines.append(f"out of date: {changes_summary(ch)}; run 'wasm-gitops render' and commit the result")
    return "".join(line + "\n" for line in lines)


def _advice(state: str) -> str:
    return {"added": "render would create this file", "changed": "render would change this file",
            "stale": "render would remove this file"}[state]
