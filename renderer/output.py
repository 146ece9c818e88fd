"""Compare a plan with the output tree, and write it atomically.

Atomicity over many files: new contents are staged under .wasm-gitops.tmp/ (same filesystem), then a
journal is committed with one rename. Applying the journal moves each old file aside before the new
one takes its place, so an error rolls everything back; a process killed after the commit point is
rolled forward by the next render (and `check` reports the unfinished render instead of a diff).
Killed before it, the tree is untouched and the staging area is discarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import parallel
from .errors import OutputError, UsageError
from .files import read_file, real_join
from .plan import MANIFEST, Plan

STAGING = ".wasm-gitops.tmp"
COMMIT = "commit"
JOURNAL = "journal.json"
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


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # stale: generated before, not any more
    unchanged: list[str] = field(default_factory=list)
    hand_edited: list[str] = field(default_factory=list)  # generated, then edited by hand
    clashes: list[str] = field(default_factory=list)  # planned paths holding files we did not write
    current: dict[str, bytes] = field(default_factory=dict)  # what the tree holds now, for diff

    @property
    def drift(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(out: Path) -> dict[str, str]:
    try:
        doc = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise OutputError(f"{out / MANIFEST}: unreadable or not JSON; restore it from version control "
                          "(it records which files wasm-gitops owns)") from None
    files = doc.get("files") if isinstance(doc, dict) and doc.get("generator") == "wasm-gitops" else None
    if not isinstance(files, dict):
        raise OutputError(f"{out / MANIFEST}: not a wasm-gitops manifest; restore it from version control")
    return {str(k): str(v) for k, v in files.items()}


def _read(path: str) -> bytes | None:
    try:
        return read_file(path)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise OutputError(f"{path}: is a directory where wasm-gitops writes a file; move it away") from None
    except NotADirectoryError:
        raise OutputError(f"{os.path.dirname(path)}: is a file where wasm-gitops needs a directory; move it "
                          "away") from None


def check_paths(plan: Plan, out: Path, protected: list[Path]) -> None:
    """Refuse to write through symlinks that leave the output tree, or over the spec itself."""
    real_out = os.path.realpath(out)
    protected_real = {os.path.realpath(p) for p in protected}
    real_dirs: dict[str, str] = {"": real_out}

    def real_dir(rel_dir: str) -> str:  # one lstat per directory, from its (already real) parent
        if rel_dir not in real_dirs:
            parent, _, name = rel_dir.rpartition("/")
            real_dirs[rel_dir] = real_join(real_dir(parent), name)
        return real_dirs[rel_dir]

    for rel in sorted(plan.files):
        parent, _, name = rel.rpartition("/")
        real = os.path.join(real_dir(parent), name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if not real.startswith(real_out + os.sep):
            raise OutputError(f"{out / rel}: resolves to {real}, outside the output directory {real_out} "
                              "(a symlink?); remove the link")
        if real in protected_real:
            raise OutputError(f"{out / rel}: is the spec itself; choose another --out")


# What one planned file is on disk: added, unchanged, changed, hand_edited (changed, and not what we
# last wrote) or clash (not ours); with the bytes on disk when the caller keeps them.
_Status = tuple[str, str, bytes | None]


def compare(plan: Plan, out: Path, *, keep_current: bool = False,
            first: Callable[[], None] | None = None) -> Changes:
    """What render would change. keep_current keeps the bytes on disk of every differing file (for
    diff); otherwise they are dropped as soon as compared, so check holds one file at a time.

    Reading every output file back (46 MB at 1,000 services) is shared with a forked helper; `first`
    runs in this process meanwhile, and an error it raises ends the comparison."""
    ch = Changes()
    owned = read_manifest(out)
    root = os.fspath(out)

    def statuses(rels: Sequence[str]) -> list[_Status]:
        found: list[_Status] = []
        for rel in rels:
            current = _read(os.path.join(root, rel))
            if current is None:
                found.append((rel, "added", None))
            elif current == plan.files[rel]:
                found.append((rel, "unchanged", None))
            else:
                if rel == MANIFEST or rel in owned:
                    edited = rel != MANIFEST and _sha(current) != owned.get(rel)
                    status = "hand_edited" if edited else "changed"
                else:
                    status = "clash"
                found.append((rel, status, current if keep_current else None))
        return found

    found, _ = parallel.split_and(statuses, sorted(plan.files), first or parallel.nothing)
    for rel, status, current in found:
        if current is not None:
            ch.current[rel] = current
        if status == "added":
            ch.added.append(rel)
        elif status == "unchanged":
            ch.unchanged.append(rel)
        elif status == "clash":
            ch.clashes.append(rel)
        else:
            ch.changed.append(rel)
            if status == "hand_edited":
                ch.hand_edited.append(rel)
    for rel in sorted(set(owned) - set(plan.files)):
        current = _read(os.path.join(root, rel))
        if current is None:
            continue
        if keep_current:
            ch.current[rel] = current
        if _sha(current) != owned[rel]:
            ch.hand_edited.append(rel)
        ch.removed.append(rel)
    return ch


# ------------------------------------------------------------------------------------------ lock

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


# ------------------------------------------------------------------------------------------ write

def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _syncfs(fd)
    finally:
        os.close(fd)


def _syncfs(fd: int) -> None:
    """syncfs(2) of the filesystem holding fd (the output tree's), else a global sync."""
    try:
        import ctypes  # here: only a write needs it, and its import is a cost on every check

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create(path: str, data: bytes) -> None:
    """A new file: openat, write, close (open() adds fstat, ioctl and lseek calls to each)."""
    fd = os.open(path, _CREATE, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _ensure_dir(path: str, known: set[str], created: list[str]) -> None:
    """mkdir -p, one system call per directory per run: `known` remembers what exists already, and
    `created` lists what this run made (in order), so that a rollback can remove it again."""
    if path in known:
        return
    try:
        os.mkdir(path)
        created.append(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path) from None
    except FileNotFoundError:
        _ensure_dir(os.path.dirname(path), known, created)
        os.mkdir(path)
        created.append(path)
    known.add(path)


def pending_commit(out: Path) -> bool:
    return (out / STAGING / COMMIT / JOURNAL).is_file()


def _staged(commit: Path, op: dict[str, str]) -> Path:
    # Staged files are numbered in one flat directory; journals of older versions mirrored the tree.
    return commit / "new" / op.get("staged", op["path"])


def recover(out: Path) -> bool:
    """Finish a render that was killed after its commit point; drop any uncommitted staging."""
    staging = out / STAGING
    done = False
    if pending_commit(out):
        commit = staging / COMMIT
        journal = json.loads((commit / JOURNAL).read_text(encoding="utf-8"))
        for op in journal["ops"]:
            target = out / op["path"]
            if op["op"] == "put":
                new = _staged(commit, op)
                if new.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(new, target)
            elif op["op"] == "delete":
                target.unlink(missing_ok=True)
        _prune_dirs(out, [op["path"] for op in journal["ops"] if op["op"] == "delete"])
        done = True
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
    return done


def _prune_dirs(out: Path, removed: list[str]) -> None:
    """Remove directories that removing our files left empty; a directory with anything else stays."""
    for rel in sorted({str(Path(r).parent) for r in removed}, key=lambda p: -p.count("/")):
        d = out / rel
        while d != out and out in d.parents:
            try:
                d.rmdir()
            except OSError:
                break
            d = d.parent


def write(plan: Plan, out: Path, changes: Changes,
          fault: Callable[[str], None] | None = None) -> None:
    """Apply changes.added/changed/removed atomically. `fault` lets tests fail at a named step.

    Creating files and directories is what a render from scratch spends its time on (on the VMs
    measured, ~0.2 ms of system time each), so each is created once: staged files go into one flat
    directory under numbers (no staging tree to build and tear down), each output directory gets one
    mkdir, and whether a target exists is known from the comparison, not asked again.
    """
    puts = changes.added + changes.changed
    if not puts and not changes.removed:
        return
    existing = set(changes.changed)
    staging = out / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    work = staging / f"stage-{os.getpid()}"
    try:
        os.makedirs(work / "new")
        new_dir = os.fspath(work / "new")
        for index, rel in enumerate(puts):
            _create(os.path.join(new_dir, str(index)), plan.files[rel])
            if fault:
                fault("stage")
        ops = ([{"op": "put", "path": rel, "staged": str(index)} for index, rel in enumerate(puts)]
               + [{"op": "delete", "path": rel} for rel in changes.removed])
        _create(os.fspath(work / JOURNAL), json.dumps({"ops": ops}).encode("utf-8"))
        # One flush of everything staged (file data and directories) before the commit point,
        # instead of an fsync per file: the journal must never name a file that is not on disk.
        _sync(staging)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{out}: cannot write the new files ({_why(e)}); nothing was changed") from None
    commit = staging / COMMIT
    os.replace(work, commit)  # the commit point
    _fsync_dir(staging)
    if fault:
        fault("commit")
    root, new_dir, old_dir = os.fspath(out), os.fspath(commit / "new"), os.fspath(commit / "old")
    known_dirs = {root}
    created_dirs: list[str] = []
    moved: list[tuple[str, str | None]] = []  # (target, backup or None when it did not exist)
    try:
        for index, rel in enumerate(puts):
            target = os.path.join(root, rel)
            _ensure_dir(os.path.dirname(target), known_dirs, created_dirs)
            backup = None
            if rel in existing:
                _ensure_dir(old_dir, known_dirs, created_dirs)
                backup = os.path.join(old_dir, str(index))
                try:
                    os.replace(target, backup)
                except FileNotFoundError:  # removed by someone since the comparison: nothing to keep
                    backup = None
            moved.append((target, backup))
            os.replace(os.path.join(new_dir, str(index)), target)
            if fault:
                fault("apply")
        for index, rel in enumerate(changes.removed):
            target = os.path.join(root, rel)
            _ensure_dir(old_dir, known_dirs, created_dirs)
            backup = os.path.join(old_dir, f"removed-{index}")
            os.replace(target, backup)
            moved.append((target, backup))
    except OSError as e:
        # Undo in reverse, then forget the journal so nobody rolls it forward.
        for target, backup in reversed(moved):
            if backup is not None and os.path.exists(backup):
                os.replace(backup, target)
            elif backup is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
        for directory in reversed(created_dirs):  # only if empty: never anything a person put there
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{out}: cannot write the new files ({_why(e)}); the tree is as it was") from None
    (commit / JOURNAL).unlink()
    shutil.rmtree(staging, ignore_errors=True)
    _prune_dirs(out, changes.removed)


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.EFBIG:
        return "file size limit exceeded"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied at {e.filename}" if e.filename else "permission denied"
    return e.strerror or str(e)
