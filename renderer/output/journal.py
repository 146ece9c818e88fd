"""Write a plan atomically, and finish or discard what an interrupted write left.

Atomicity over many files: new contents are staged under .wasm-gitops.tmp/ (same filesystem), then a
journal is committed with one rename. Applying the journal moves each old file aside before the new
one takes its place, so an error rolls everything back; a process killed after the commit point is
rolled forward by the next render (and `check` reports the unfinished render instead of a diff).
Killed before it, the tree is untouched and the staging area is discarded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError
from ..plan import MANIFEST, Plan
from ..safepath import (
    FILE_LIMIT,
    GENERATED_PREFIX,
    JSON_LIMIT,
    Inputs,
    NotRegular,
    OutputTree,
    load_json,
    owned_shape,
    read_regular,
)
from .compare import Changes

STAGING = ".wasm-gitops.tmp"
COMMIT = "commit"
JOURNAL = "journal.json"

# ------------------------------------------------------------------------------------------ staging
#
# The staging area sits in the output tree, so a pull request can plant one: a symlink to elsewhere,
# a file, a journal naming paths outside the tree or inputs of the spec. It is only ever reached
# through directory descriptors opened with O_NOFOLLOW, its layout must be exactly what write()
# makes, and every operation of a committed journal must pass the same rules as a render's own
# writes before anything is touched.

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_STAGE_NAME = re.compile(r"stage-[0-9]{1,10}|" + COMMIT)
_STAGED_NAME = re.compile(r"(?:removed-)?[0-9]{1,9}")
_OP_KEYS = {"put": {"op", "path", "staged"}, "delete": {"op", "path"}}


def _open_dir(name: str | Path, dir_fd: int | None = None) -> int:
    return os.open(name, _DIR, dir_fd=dir_fd)


@dataclass
class Staging:
    """What .wasm-gitops.tmp holds: nothing, an area write() left (uncommitted, or committed and
    applied to the end), or a committed journal whose operations are still to be finished."""

    present: bool = False
    ops: list[dict[str, str]] | None = None  # a committed, unfinished journal, every op checked

    @property
    def committed(self) -> bool:
        return self.ops is not None


def _layout_problem(sfd: int) -> str | None:
    """Anything in the staging area that write() would not have put there."""
    for entry in os.scandir(sfd):
        if not _STAGE_NAME.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            return f"holds {entry.name!r}"
        wfd = _open_dir(entry.name, sfd)
        try:
            for inner in os.scandir(wfd):
                if inner.name == JOURNAL and inner.is_file(follow_symlinks=False):
                    continue
                if inner.name not in ("new", "old") or not inner.is_dir(follow_symlinks=False):
                    return f"holds {entry.name}/{inner.name!r}"
                dfd = _open_dir(inner.name, wfd)
                try:
                    for leaf in os.scandir(dfd):
                        if not _STAGED_NAME.fullmatch(leaf.name) or not leaf.is_file(follow_symlinks=False):
                            return f"holds {entry.name}/{inner.name}/{leaf.name!r}"
                finally:
                    os.close(dfd)
        finally:
            os.close(wfd)
    return None


def _journal_ops(doc: object) -> list[dict[str, str]] | None:
    ops = doc.get("ops") if isinstance(doc, dict) and set(doc) == {"ops"} else None
    if not isinstance(ops, list):
        return None
    for op in ops:
        if not (isinstance(op, dict) and op.get("op") in _OP_KEYS and set(op) == _OP_KEYS[op["op"]]
                and all(isinstance(v, str) for v in op.values())
                and (op["op"] != "put" or re.fullmatch(r"[0-9]{1,9}", op["staged"]))):
            return None
    return ops


def _op_problem(tree: OutputTree, inputs: Inputs, op: dict[str, str], new_fd: int) -> str | None:
    """Why a journal's operation is not one a render of this tree could have written."""
    rel = op["path"]
    if not owned_shape(rel):
        return f"{op['op']} {rel!r} is not a path wasm-gitops writes"
    fault = tree.dir_fault(os.path.dirname(rel))
    if fault:
        return f"{op['op']} {rel!r}: {tree.out / fault[0]} {fault[1]}"
    what = inputs.what(tree.path(rel), nested=True)
    if what:
        return f"{op['op']} {rel!r}: it is {what}, an input of the spec"
    if op["op"] == "put":
        try:
            if new_fd < 0:
                return None  # nothing staged is left: every put was applied before the kill
            os.lstat(op["staged"], dir_fd=new_fd)
        except FileNotFoundError:
            return None  # applied before the kill
    try:
        current = read_regular(tree.path(rel), limit=FILE_LIMIT)
    except NotRegular as e:
        return f"{op['op']} {rel!r}: {e.what}"
    if current is not None and rel != MANIFEST and not current.startswith(GENERATED_PREFIX):
        return f"{op['op']} {rel!r}: that file does not start with the header wasm-gitops writes"
    return None


def survey(tree: OutputTree, inputs: Inputs) -> Staging:
    """What the staging area holds, refusing (OutputError) anything wasm-gitops did not make."""
    where = tree.out / STAGING
    advice = f"wasm-gitops made none of it and does not follow or delete it: move {where} away"
    try:
        mode = os.lstat(tree.path(STAGING)).st_mode
    except FileNotFoundError:
        return Staging()
    if stat.S_ISLNK(mode):
        raise OutputError(f"{where}: is a symlink to {os.path.realpath(tree.path(STAGING))}; {advice}")
    if not stat.S_ISDIR(mode):
        raise OutputError(f"{where}: is not a directory; {advice}")
    sfd = _open_dir(tree.path(STAGING))
    try:
        problem = _layout_problem(sfd)
        if problem:
            raise OutputError(f"{where}: {problem}, which is not a staging area wasm-gitops made; {advice}")
        try:
            cfd = _open_dir(COMMIT, sfd)
        except FileNotFoundError:
            return Staging(present=True)
        try:
            try:
                data = read_regular(JOURNAL, dir_fd=cfd, limit=JSON_LIMIT)
            except NotRegular as e:
                raise OutputError(f"{where}/{COMMIT}/{JOURNAL}: {e.what}; {advice}") from None
            if data is None:
                return Staging(present=True)  # a render finished, and was killed while cleaning up
            try:
                ops = _journal_ops(load_json(data))
            except ValueError as e:
                raise OutputError(f"{where}/{COMMIT}/{JOURNAL}: not JSON ({e}); {advice}") from None
            if ops is None:
                raise OutputError(f"{where}/{COMMIT}/{JOURNAL}: not a journal wasm-gitops writes; {advice}")
            try:
                nfd = _open_dir("new", cfd)
            except FileNotFoundError:
                nfd = -1
            try:
                problems = [p for op in ops if (p := _op_problem(tree, inputs, op, nfd))]
            finally:
                if nfd >= 0:
                    os.close(nfd)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise OutputError(f"{where}/{COMMIT}/{JOURNAL}: {problems[0]}{more}; so it is not finished: "
                                  f"{advice}")
            return Staging(present=True, ops=ops)
        finally:
            os.close(cfd)
    finally:
        os.close(sfd)


def recover(tree: OutputTree, inputs: Inputs, staging: Staging) -> bool:
    """Finish a render that was killed after its commit point (its journal checked by survey());
    drop a staging area write() left behind. Returns whether a render was finished."""
    if not staging.present:
        return False
    outfd = _open_dir(tree.real)
    try:
        done = False
        if staging.ops is not None:
            sfd = _open_dir(STAGING, outfd)
            try:
                try:
                    nfd = _open_dir(f"{COMMIT}/new", sfd)
                except FileNotFoundError:
                    nfd = -1
                known = {tree.real}
                try:
                    for op in staging.ops:
                        target = tree.path(op["path"])
                        if op["op"] == "put":
                            if nfd < 0:
                                continue
                            try:
                                os.lstat(op["staged"], dir_fd=nfd)
                            except FileNotFoundError:
                                continue
                            _ensure_dir(os.path.dirname(target), known, [])
                            os.replace(op["staged"], target, src_dir_fd=nfd)
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(target)
                finally:
                    if nfd >= 0:
                        os.close(nfd)
            finally:
                os.close(sfd)
            _prune_dirs(tree, [op["path"] for op in staging.ops if op["op"] == "delete"])
            done = True
        found = inputs.within(os.path.join(tree.real, STAGING))
        if found:
            raise OutputError(f"{tree.out / STAGING}: holds {found}; wasm-gitops does not delete it: move "
                              "that input out of the staging area")
        shutil.rmtree(STAGING, dir_fd=outfd)
        return done
    finally:
        os.close(outfd)


# ------------------------------------------------------------------------------------------ write

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


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _create(name: str, data: bytes, dir_fd: int) -> None:
    """A new file in a directory this process made: openat, write, close (open() adds fstat, ioctl
    and lseek calls to each)."""
    fd = os.open(name, _CREATE, 0o666, dir_fd=dir_fd)
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
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path) from None
    except FileNotFoundError:
        _ensure_dir(os.path.dirname(path), known, created)
        os.mkdir(path)
        created.append(path)
    known.add(path)


def _prune_dirs(tree: OutputTree, removed: list[str]) -> None:
    """Remove directories that removing our files left empty; a directory with anything else stays
    (rmdir never follows a link: a link there fails with ENOTDIR and stays too)."""
    for rel in sorted({os.path.dirname(r) for r in removed}, key=lambda p: -p.count("/")):
        while rel:
            try:
                os.rmdir(tree.path(rel))
            except OSError:
                break
            rel = os.path.dirname(rel)


def write(plan: Plan, tree: OutputTree, changes: Changes,
          fault: Callable[[str], None] | None = None) -> None:
    """Apply changes.added/changed/removed atomically. `fault` lets tests fail at a named step.

    Creating files and directories is what a render from scratch spends its time on (on the VMs
    measured, ~0.2 ms of system time each), so each is created once: staged files go into one flat
    directory under numbers (no staging tree to build and tear down), each output directory gets one
    mkdir, and whether a target exists is known from the comparison, not asked again.

    The staging area is made here (mkdir, then opened with O_NOFOLLOW) and reached only through
    descriptors; recover() has removed any earlier one, so one that exists now is refused.
    """
    puts = changes.added + changes.changed
    if not puts and not changes.removed:
        return
    outfd = _open_dir(tree.real)
    try:
        _write(plan, tree, changes, puts, outfd, fault)
    finally:
        os.close(outfd)


def _write(plan: Plan, tree: OutputTree, changes: Changes, puts: list[str], outfd: int,
           fault: Callable[[str], None] | None) -> None:
    out = tree.out
    existing = set(changes.changed)
    work = f"stage-{os.getpid()}"
    fds: list[int] = []
    try:
        os.mkdir(STAGING, 0o700, dir_fd=outfd)
    except FileExistsError:
        raise OutputError(f"{out / STAGING}: appeared while rendering (made by something else); move it "
                          "away and render again") from None
    except OSError as e:
        raise OutputError(f"{out}: cannot write the new files ({_why(e)}); nothing was changed") from None
    try:
        try:
            sfd = _open_dir(STAGING, outfd)
            fds.append(sfd)
            os.mkdir(work, 0o700, dir_fd=sfd)
            wfd = _open_dir(work, sfd)
            fds.append(wfd)
            os.mkdir("new", 0o700, dir_fd=wfd)
            nfd = _open_dir("new", wfd)
            fds.append(nfd)
            for index, rel in enumerate(puts):
                _create(str(index), plan.files[rel], nfd)
                if fault:
                    fault("stage")
            ops = ([{"op": "put", "path": rel, "staged": str(index)} for index, rel in enumerate(puts)]
                   + [{"op": "delete", "path": rel} for rel in changes.removed])
            _create(JOURNAL, json.dumps({"ops": ops}).encode("utf-8"), wfd)
            # One flush of everything staged (file data and directories) before the commit point,
            # instead of an fsync per file: the journal must never name a file that is not on disk.
            _syncfs(sfd)
        except OSError as e:
            shutil.rmtree(STAGING, dir_fd=outfd, ignore_errors=True)
            raise OutputError(f"{out}: cannot write the new files ({_why(e)}); nothing was changed") from None
        os.replace(work, COMMIT, src_dir_fd=sfd, dst_dir_fd=sfd)  # the commit point
        os.fsync(sfd)
        if fault:
            fault("commit")
        _apply(tree, changes, puts, existing, wfd, nfd, outfd, fault)
        # Directories the removals left empty go before the journal does: killed in between, the
        # next render prunes them again; after it, nothing remains to be done.
        _prune_dirs(tree, changes.removed)
        os.unlink(JOURNAL, dir_fd=wfd)
        if fault:
            fault("finish")
    finally:
        for fd in reversed(fds):
            os.close(fd)
    shutil.rmtree(STAGING, dir_fd=outfd, ignore_errors=True)


def _apply(tree: OutputTree, changes: Changes, puts: list[str], existing: set[str], wfd: int, nfd: int,
           outfd: int, fault: Callable[[str], None] | None) -> None:
    out = tree.out
    known_dirs = {tree.real}
    created_dirs: list[str] = []
    moved: list[tuple[str, str | None]] = []  # (target, backup name in old/, None when it did not exist)
    ofd = -1

    def old_dir() -> int:
        nonlocal ofd
        if ofd < 0:
            os.mkdir("old", 0o700, dir_fd=wfd)
            ofd = _open_dir("old", wfd)
        return ofd

    try:
        try:
            for index, rel in enumerate(puts):
                target = tree.path(rel)
                _ensure_dir(os.path.dirname(target), known_dirs, created_dirs)
                backup: str | None = None
                if rel in existing:
                    backup = str(index)
                    try:
                        os.replace(target, backup, dst_dir_fd=old_dir())
                    except FileNotFoundError:  # removed by someone since the comparison: nothing to keep
                        backup = None
                moved.append((target, backup))
                os.replace(str(index), target, src_dir_fd=nfd)
                if fault:
                    fault("apply")
            for index, rel in enumerate(changes.removed):
                target = tree.path(rel)
                backup = f"removed-{index}"
                os.replace(target, backup, dst_dir_fd=old_dir())
                moved.append((target, backup))
        except OSError as e:
            # Undo in reverse, then forget the journal so nobody rolls it forward.
            for target, backup in reversed(moved):
                if backup is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(backup, target, src_dir_fd=ofd)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(target)
            for directory in reversed(created_dirs):  # only if empty: never anything a person put there
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            shutil.rmtree(STAGING, dir_fd=outfd, ignore_errors=True)
            raise OutputError(f"{out}: cannot write the new files ({_why(e)}); the tree is as it was") from None
    finally:
        if ofd >= 0:
            os.close(ofd)


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.EFBIG:
        return "file size limit exceeded"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        # Staged files are named relative to the staging directory's descriptor: name the tree's side.
        where = next((str(f) for f in (e.filename, e.filename2) if f and os.path.isabs(str(f))), None)
        return f"permission denied at {where}" if where else "permission denied"
    return e.strerror or str(e)
