"""Reporters, chosen by name: findings and output changes as text, json or GitHub annotations.

Paths: every path printed for a person is relative to the current directory when the file is under it
(as compilers and linters print them), so `-f mesh/filters.yaml` reports `mesh/filters.yaml:16:17`; a
file outside the current directory keeps its short name, relative to the spec (findings) or to the
output directory (files of the tree). GitHub annotations need `file=` relative to the repository
root instead: GitHub resolves it against the checkout, wherever the command ran.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clusters import ClusterChange, changes_line
from .errors import Finding
from .output import Changes

FORMATS = ("text", "json", "github")
# Every JSON document carries it; it changes only when a field is removed or changes meaning.
SCHEMA_VERSION = 1


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _repository_root(start: str) -> str | None:
    """The nearest directory at or above `start` holding .git (a directory, or a worktree's file)."""
    here = start
    while True:
        if os.path.lexists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


@dataclass(frozen=True)
class Locator:
    """Where the spec and the output tree are, so each path is printed from the right place."""

    spec_dir: str  # absolute, symlinks kept: the user's own spelling of the place
    out_dir: str
    cwd: str
    repo_root: str  # what GitHub's file= is relative to

    @classmethod
    def of(cls, spec: Path, out: Path | None = None) -> Locator:
        spec_dir = os.path.dirname(os.path.abspath(spec))
        out_dir = os.path.abspath(out) if out is not None else spec_dir
        cwd = os.getcwd()
        # Without a git checkout the spec's directory is the repository, as the renderer sees it.
        root = _repository_root(spec_dir) or spec_dir
        return cls(spec_dir, out_dir, cwd, root)

    def _shown(self, absolute: str, short: str) -> str:
        if _inside(absolute, self.cwd):
            return Path(os.path.relpath(absolute, self.cwd)).as_posix()
        return short

    def _annotated(self, absolute: str, short: str) -> str:
        if _inside(absolute, self.repo_root):
            return Path(os.path.relpath(absolute, self.repo_root)).as_posix()
        return short

    def finding_file(self, f: Finding, *, annotation: bool = False) -> str:
        absolute = os.path.normpath(os.path.join(self.spec_dir, f.file))
        return self._annotated(absolute, f.file) if annotation else self._shown(absolute, f.file)

    def tree_file(self, rel: str, *, annotation: bool = False) -> str:
        """A file of the output tree, given relative to the output directory."""
        absolute = os.path.normpath(os.path.join(self.out_dir, rel))
        return self._annotated(absolute, rel) if annotation else self._shown(absolute, rel)


# Findings relative to the spec's directory, as the spec loader reports them.
AS_GIVEN = Locator("", "", "\0", "\0")


def _escape_github(text: str) -> str:
    # GitHub workflow commands: data must escape %, CR and LF.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return _escape_github(text).replace(":", "%3A").replace(",", "%2C")


def finding_line(f: Finding, where: Locator = AS_GIVEN) -> str:
    prefix = "" if f.severity == "error" else "warning: "
    return f"{where.finding_file(f)}:{f.line}:{f.column}: {prefix}{f.message}"


def finding_records(items: Sequence[Finding], where: Locator = AS_GIVEN) -> list[dict[str, Any]]:
    return [{"file": where.finding_file(f), "line": f.line, "column": f.column, "severity": f.severity,
             "path": f.path, "message": f.message} for f in items]


def github_findings(items: Sequence[Finding], where: Locator = AS_GIVEN) -> str:
    return "".join(
        f"::{f.severity} file={escape_property(where.finding_file(f, annotation=True))},line={f.line},"
        f"col={f.column}::{_escape_github(f.message)}\n" for f in items)


def findings(items: Sequence[Finding], fmt: str, where: Locator = AS_GIVEN) -> str:
    """Findings alone: text lines, GitHub annotations, or validate's JSON document."""
    if fmt == "json":
        return document({"valid": not any(f.severity == "error" for f in items),
                         "problems": finding_records(items, where)})
    if fmt == "github":
        return github_findings(items, where)
    return "".join(f"{finding_line(f, where)}\n" for f in items)


def document(fields: dict[str, Any]) -> str:
    return json.dumps({"schemaVersion": SCHEMA_VERSION, **fields}, indent=2, sort_keys=True) + "\n"


def changes_summary(ch: Changes) -> str:
    return (f"{len(ch.added)} added, {len(ch.changed)} changed, {len(ch.removed)} removed, "
            f"{len(ch.unchanged)} unchanged")


def drift(ch: Changes, fmt: str, *, interrupted: bool = False, where: Locator = AS_GIVEN,
          warnings: Sequence[Finding] = (), clusters: Sequence[ClusterChange] = ()) -> str:
    rows: list[tuple[str, str]] = [("added", p) for p in ch.added] + [("changed", p) for p in ch.changed]
    rows += [("stale", p) for p in ch.removed]
    edited = ch.hand_edited
    if fmt == "json":
        return document({"valid": True, "clean": not rows and not edited and not interrupted,
                         "interrupted_render": interrupted,
                         "added": ch.added, "changed": ch.changed, "stale": ch.removed,
                         "edited_by_hand": edited, "problems": finding_records(warnings, where),
                         **({"clusters": [c.as_dict() for c in clusters]} if clusters else {})})
    lines: list[str] = []
    if fmt == "github":
        for state, p in rows:
            lines.append(f"::error file={escape_property(where.tree_file(p, annotation=True))}::{state}: "
                         f"{_escape_github(_advice(state))}")
        for p in edited:
            lines.append(f"::error file={escape_property(where.tree_file(p, annotation=True))}::generated file "
                         "edited by hand; change filters.yaml instead")
        if interrupted:
            lines.append("::error::a render was interrupted; run 'wasm-gitops render' to finish it")
        return github_findings(warnings, where) + "".join(line + "\n" for line in lines)
    for state, p in rows:
        lines.append(f"{state:8} {where.tree_file(p)}")
    for p in edited:
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
