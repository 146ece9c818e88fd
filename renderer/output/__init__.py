"""The output tree: what render would change in it (compare), one run at a time (lock), and writing a
plan atomically, with recovery from an interrupted write (journal)."""

from __future__ import annotations

from .compare import Changes, Manifest, check_paths, compare, read_manifest
from .journal import COMMIT, JOURNAL, STAGING, Staging, recover, survey, write
from .lock import LOCK_WAIT_ENV, lock_wait_seconds, locked

__all__ = [
    "COMMIT",
    "JOURNAL",
    "LOCK_WAIT_ENV",
    "STAGING",
    "Changes",
    "Manifest",
    "Staging",
    "check_paths",
    "compare",
    "lock_wait_seconds",
    "locked",
    "read_manifest",
    "recover",
    "survey",
    "write",
]
