"""The output tree: what render would change in it (compare), one run at a time (lock), and writing a
plan atomically, with recovery from an interrupted write (journal)."""

from __future__ import annotations

from .compare import Changes, check_paths, compare
from .journal import recover, survey, write
from .lock import locked

__all__ = [
    "Changes",
    "check_paths",
    "compare",
    "locked",
    "recover",
    "survey",
    "write",
]
