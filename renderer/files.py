"""Reading files and resolving paths with as few system calls as the answer needs.

A render at mesh scale reads some 7,000 files (the workloads' manifests, then every output file to
compare) and resolves thousands of paths. Python's open().read() costs eight system calls per file
(openat, two fstat, ioctl, two lseek, two read, close) and os.path.realpath one lstat per component of
the whole path; on a virtual machine a system call costs microseconds, and these were a quarter of
the time of a `check` (strace -c: 82,000 calls for 1,000 services).
"""

from __future__ import annotations

import errno
import os
import stat

# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (forever, in CI). It
# changes nothing for the regular files that are read; anything else is refused after the fstat.
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


class NotAFile(OSError):
    """The path is a FIFO, a device or a socket: reading it could block or never end."""

    def __init__(self, path: str, mode: int) -> None:
        self.kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        super().__init__(errno.EINVAL, f"is {self.kind}, not a regular file", path)


class TooLarge(OSError):
    """The file is bigger than the caller accepts; nothing of it was read."""

    def __init__(self, path: str, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(errno.EFBIG, f"is {size:,} bytes, more than {limit:,}", path)


def read_file(path: str, limit: int | None = None, *, dir_fd: int | None = None, follow: bool = True) -> bytes:
    """The whole file: openat, fstat, read, close. Raises like open() (FileNotFoundError,
    IsADirectoryError, NotADirectoryError, PermissionError), NotAFile for anything but a regular
    file, and TooLarge when fstat says it holds more than `limit` bytes (checked before reading, so a
    2 GiB sparse file costs no memory). follow=False refuses a final symlink (OSError ELOOP)."""
    fd = os.open(path, _FLAGS if follow else _FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            raise NotAFile(path, st.st_mode)
        size = st.st_size
        if limit is not None and size > limit:
            raise TooLarge(path, size, limit)
        data = os.read(fd, size + 1)  # one byte more than fstat said, to learn that the file ended
        if len(data) == size:  # a regular file reads in full: this is all of it
            return data
        chunks = [data]  # it grew, or a short read (not on local filesystems): read to the end
        total = len(data)
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            total += len(chunk)
            if limit is not None and total > limit:  # growing while we read: still bounded
                raise TooLarge(path, total, limit)
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_within(real_root: str, real_path: str) -> bool:
    return real_path == real_root or real_path.startswith(real_root.rstrip("/") + "/")


def real_join(real_dir: str, relative: str) -> str:
    """realpath(real_dir/relative) for a real_dir that is already real: one lstat per component of
    `relative` instead of one per component of the whole path."""
    return real_join_stat(real_dir, relative)[0]


def real_join_stat(real_dir: str, relative: str) -> tuple[str, int | None]:
    """real_join, and the file type bits (stat.S_IFMT) of the result, None if it does not exist: the
    lstat that looks for links already says what the last component is, unless it is a link."""
    current = real_dir
    mode: int | None = None
    for part in relative.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            current = os.path.dirname(current)
            mode = None
            continue
        candidate = os.path.join(current, part)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:  # missing (or unreadable): realpath leaves such a component as it is
            current, mode = candidate, None
            continue
        if stat.S_ISLNK(mode):
            current = os.path.realpath(candidate)
            mode = None
        else:
            current = candidate
    if mode is None:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return current, None
    return current, stat.S_IFMT(mode)


_SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")


def schema_text(name: str) -> str:
    """One of our JSON Schemas. renderer/schemas is the repository's schemas/ (a symlink in a
    checkout, a package directory in the wheel); read as a file, not through importlib.resources,
    whose import alone costs more than reading every schema."""
    return read_file(os.path.join(_SCHEMAS, name)).decode("utf-8")
