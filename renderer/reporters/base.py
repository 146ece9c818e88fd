"""What every reporter shares: where a path is printed from, the one GitHub escape, the one JSON shape,
and the table of reporters by name per result kind.

Paths: every path printed for a person is relative to the current directory when the file is under it
(as compilers and linters print them), so `-f mesh/filters.yaml` reports `mesh/filters.yaml:16:17`; a
file outside the current directory keeps its short name, relative to the spec (findings) or to the
output directory (files of the tree). GitHub annotations need `file=` relative to the repository
root instead: GitHub resolves it against the checkout, wherever the command ran.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Finding

# Every JSON document carries it; it changes only when a field is removed or changes meaning.
SCHEMA_VERSION = 1

Reporter = Callable[..., str]
# kind of result -> format name -> the function that turns that result into text. A new format is
# one function registered here under its kind; the command line offers what the table holds.
REPORTERS: dict[str, dict[str, Reporter]] = {}
# Where each kind's reporters live, imported on first use: a render never loads cost's or verify's.
_HOMES = {"findings": ("findings",), "problems": ("findings", "markdown"), "drift": ("findings",),
          "review": ("diff", "markdown"), "verify": ("verify",), "module": ("inspect",), "image": ("inspect",),
          "inspect": ("inspect",), "cost": ("cost",)}


def reporter(kind: str, name: str) -> Callable[[Reporter], Reporter]:
    """Register a function as the `name` format of results of `kind`."""

    def register(fn: Reporter) -> Reporter:
        REPORTERS.setdefault(kind, {})[name] = fn
        return fn

    return register


def _table(kind: str) -> dict[str, Reporter]:
    for home in _HOMES.get(kind, ()):
        importlib.import_module(f"{__package__}.{home}")
    return REPORTERS.get(kind, {})


def formats(kind: str) -> tuple[str, ...]:
    return tuple(_table(kind))


def report(kind: str, fmt: str, *args: Any, **kwargs: Any) -> str:
    """The result in the named format; a format the kind does not have is a programming error."""
    chosen = _table(kind).get(fmt)
    if chosen is None:
        raise ValueError(f"unknown report format {fmt!r} for {kind}; expected {' or '.join(formats(kind))}")
    return chosen(*args, **kwargs)


def document(fields: dict[str, Any], *, finite: bool = False) -> str:
    """Every JSON output: schemaVersion first among sorted keys, two-space indent, one final newline."""
    return json.dumps({"schemaVersion": SCHEMA_VERSION, **fields}, indent=2, sort_keys=True,
                      allow_nan=not finite) + "\n"


def escape_data(text: str) -> str:
    # GitHub workflow commands: data must escape %, CR and LF.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    # A property value (file=, title=) also ends at "," and the properties at "::".
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")



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

