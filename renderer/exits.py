"""How the process ends: the console script's entry (closed standard streams, a reader that went away,
a fast exit without tearing the heap down) and a crash's one line plus its log. Which exception means
which exit code is decided in renderer/cli.py (`_run`)."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

CRASH_EXIT = 3
INTERRUPTED_EXIT = 130


def crash_log_path() -> Path:
    """Where a crash's traceback goes: the user cache directory, like pre-commit's pre-commit.log."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wasm-gitops" / "wasm-gitops.log"


def crash(error: BaseException, say: Callable[[str], None]) -> int:
    """An exception nobody expected is a bug: exit 3, one line to read, the traceback kept for the report."""
    detail = traceback.format_exception(type(error), error, error.__traceback__)
    log = crash_log_path()
    try:
        from importlib.metadata import version

        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(f"wasm-gitops {version('wasm-gitops')}, Python {sys.version.split()[0]}\n"
                     f"command: {' '.join(sys.argv)}\n\n{''.join(detail)}")
        where = f"the traceback is in {log}"
    except Exception:  # noqa: BLE001 - the log is a courtesy: without it the traceback goes to stderr
        say("".join(detail))
        where = "the traceback is above"
    summary = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    say(f"wasm-gitops: unexpected error ({summary}); this is a bug in wasm-gitops, please report it; "
         f"{where}\n")
    return CRASH_EXIT


def run_console(main: Callable[..., object], say: Callable[[str], None]) -> None:
    """The console script (and python -m renderer): main(), then leave without tearing the heap down.

    Python's shutdown frees every object one by one: after a render at mesh scale that is ~0.1 s of
    a ~1 s run, spent on memory the kernel reclaims at once anyway. Nothing is pending by then (files
    are closed, the lock released), so once stdout and stderr are flushed, os._exit is safe. Only the
    real process does this: tests call main() and keep their interpreter."""
    _reopen_closed_streams()
    try:
        main(prog_name="wasm-gitops")
        code: int = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        say("wasm-gitops: interrupted\n")
        code = INTERRUPTED_EXIT
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be said, as for a process that SIGPIPE
        # ended; later flushes go to /dev/null instead of raising again.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        code = 128 + signal.SIGPIPE
    except Exception as e:  # noqa: BLE001 - outside any command (option parsing, completion): still a bug
        code = crash(e, say)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed pipe (| head) or stream: nothing more to say
            pass
    os._exit(code)


def _reopen_closed_streams() -> None:
    """Started with stdout or stderr closed (`validate >&-`): put /dev/null on the descriptor.

    Python leaves sys.stdout None then (and crashed at the final flush), and the first file this
    process opens would get descriptor 1, so a child process (kubectl, a build), which writes to its
    inherited descriptor 1, would write into that file. The command runs as usual and its exit code
    still says the result; only the text is discarded, which stderr (when open) says once."""
    closed = []
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:  # descriptors are allocated lowest first: 1 (or 2) when it is closed
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)  # as a standard stream is: a child must not get a free slot
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="replace", closefd=False))  # noqa: SIM115
            closed.append(name)
    if "stdout" in closed and "stderr" not in closed:
        print("wasm-gitops: standard output is closed; the report is discarded (the exit code still "
              "says the result)", file=sys.stderr)
