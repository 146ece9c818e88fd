"""One run at a time per output tree: flock on the output directory, shared for check, exclusive for render."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError, UsageError

LOCK_WAIT_ENV = "WASM_GITOPS_LOCK_WAIT"


def lock_wait_seconds() -> float:
    """How long to wait for another run's lock. Read when a lock is taken, not at import: a malformed
    value is a usage error with a message, never a traceback before the CLI can report it."""
    raw = os.environ.get(LOCK_WAIT_ENV, "60")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UsageError(f"{LOCK_WAIT_ENV}={raw!r}: not a number of seconds; set it to e.g. 60, or unset it")
    return seconds


@contextmanager
def locked(out: Path, *, exclusive: bool, wait: float | None = None,
           say: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> Iterator[None]:
    """flock on the output directory itself: no lock file to commit or to leave behind."""
    if wait is None:
        wait = lock_wait_seconds()
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    say(f"wasm-gitops: waiting for another wasm-gitops run that holds {out} ...")
                    told = True
                if time.monotonic() >= deadline:
                    raise OutputError(f"{out}: another wasm-gitops run still holds it after {wait:.0f}s; "
                                      "let it finish, then run again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
