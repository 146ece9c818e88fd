"""One error hierarchy: everything a user can fix is a SpecError carrying findings with positions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Finding:
    """One problem in an input file, 1-based line and column, with what to do about it."""

    file: str
    line: int
    column: int
    message: str
    severity: Severity = "error"
    path: str = ""  # JSON path into the spec, for the json reporter

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        return f"{self.file}:{self.line}:{self.column}: {prefix}{self.message}"


class WasmGitopsError(Exception):
    """Base of every error the CLI turns into an exit code instead of a traceback."""

    exit_code = 2


class SpecError(WasmGitopsError):
    """The spec (or a file it names) is wrong; the user can fix it. Exit 2, nothing written."""

    def __init__(self, findings: Iterable[Finding]) -> None:
        self.findings = sorted(set(findings), key=lambda f: (f.file, f.line, f.column, f.message))
        super().__init__("\n".join(str(f) for f in self.findings))


class UsageError(WasmGitopsError):
    """A command-line or environment problem that is not in the spec: one line, exit 2."""


class OutputError(WasmGitopsError):
    """The output tree cannot be written as asked (a clash with a hand-written file, a lock, I/O)."""


class RenderBug(WasmGitopsError):
    """What we rendered fails validation: a bug in wasm-gitops, not in the user's spec."""

    exit_code = 3
