"""What render would change in the output tree: the plan compared with the files on disk and the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import parallel
from ..errors import Finding, OutputError
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


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # stale: generated before, not any more
    unchanged: list[str] = field(default_factory=list)
    hand_edited: list[str] = field(default_factory=list)  # generated, then edited by hand
    clashes: list[str] = field(default_factory=list)  # planned paths holding files we did not write
    # Entries of the manifest that render leaves alone (not a path it writes, behind a link, an
    # input, not its file): one warning each, never drift.
    disowned: list[Finding] = field(default_factory=list)
    current: dict[str, bytes] = field(default_factory=dict)  # what the tree holds now, for diff

    @property
    def drift(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Manifest:
    files: dict[str, str]  # path as written in the manifest -> sha256 as written ("" if not a string)
    text: str = ""  # for the position of an entry in a warning

    def position(self, rel: str) -> tuple[int, int]:
        at = self.text.find(json.dumps(rel) + ":")
        if at < 0:
            return 1, 1
        line_start = self.text.rfind("\n", 0, at) + 1
        return self.text.count("\n", 0, at) + 1, at - line_start + 1


def read_manifest(tree: OutputTree) -> Manifest:
    where = tree.out / MANIFEST
    try:
        data = read_regular(tree.path(MANIFEST), limit=JSON_LIMIT)
    except NotRegular as e:
        raise OutputError(f"{where}: {e.what}; restore it from version control (it records which files "
                          "wasm-gitops owns, and is never read through a link)") from None
    except OSError as e:
        raise OutputError(f"{where}: cannot read it ({e.strerror}); fix its permissions") from None
    if data is None:
        return Manifest({})
    try:
        doc = load_json(data)
    except ValueError as e:
        raise OutputError(f"{where}: not JSON ({e}); restore it from version control "
                          "(it records which files wasm-gitops owns)") from None
    files = doc.get("files") if isinstance(doc, dict) and doc.get("generator") == "wasm-gitops" else None
    if not isinstance(files, dict):
        raise OutputError(f"{where}: not a wasm-gitops manifest; restore it from version control")
    return Manifest({str(k): v if isinstance(v, str) else "" for k, v in files.items()},
                    data.decode("utf-8"))


def _read(tree: OutputTree, rel: str) -> bytes | None:
    """A planned file as it is on disk: a link, a directory, a FIFO or a device there is refused."""
    try:
        return read_regular(tree.path(rel), limit=FILE_LIMIT)
    except NotRegular as e:
        if e.what == "is not a directory":
            raise OutputError(f"{tree.out / os.path.dirname(rel)}: is a file where wasm-gitops needs a "
                              "directory; move it away") from None
        if e.what.endswith("expected"):  # too big to be anything render wrote
            raise OutputError(f"{tree.out / rel}: {e.what} of a file wasm-gitops writes; move it away") from None
        raise OutputError(f"{tree.out / rel}: {e.what} where wasm-gitops writes a file; it never writes "
                          "through a link or over anything but a file: move it away") from None
    except OSError as e:
        raise OutputError(f"{tree.out / rel}: cannot read it ({e.strerror}); fix its permissions") from None


def check_paths(plan: Plan, tree: OutputTree, spec: Path) -> None:
    """Refuse to write through any symlink (out of the tree or within it), or over the spec itself.
    One lstat per directory; the files themselves are opened without following links by compare()."""
    spec_real = os.path.realpath(spec)
    parents: set[str] = set()
    for rel in sorted(plan.files):
        parent = os.path.dirname(rel)
        if parent not in parents:
            parents.add(parent)
            tree.require_dir(parent)
        if tree.path(rel) == spec_real:
            raise OutputError(f"{tree.out / rel}: is the spec itself; choose another --out")


def _stale(tree: OutputTree, inputs: Inputs, rel: str) -> tuple[str, bytes | None]:
    """Why render leaves a manifest entry it no longer produces alone ("" if it may delete it),
    and the file's bytes when it may."""
    if rel == MANIFEST or not owned_shape(rel):
        return "not a path wasm-gitops writes", None
    fault = tree.dir_fault(os.path.dirname(rel))
    if fault:
        return f"{tree.out / fault[0]} {fault[1]}", None
    if not tree.dir_exists(os.path.dirname(rel)):
        return "", None
    what = inputs.what(tree.path(rel), nested=True)
    if what:
        return f"it is {what}, an input of the spec", None
    try:
        data = read_regular(tree.path(rel), limit=FILE_LIMIT)
    except NotRegular as e:
        return e.what, None
    except OSError as e:
        raise OutputError(f"{tree.out / rel}: cannot read it ({e.strerror}); fix its permissions") from None
    if data is not None and not data.startswith(GENERATED_PREFIX):
        return "it does not start with the header wasm-gitops writes", None
    return "", data


# What one planned file is on disk: added, unchanged, changed, hand_edited (changed, and not what we
# last wrote) or clash (not ours); with the bytes on disk when the caller keeps them.
_Status = tuple[str, str, bytes | None]


def compare(plan: Plan, tree: OutputTree, inputs: Inputs, *, keep_current: bool = False) -> Changes:
    """What render would change. keep_current keeps the bytes on disk of every differing file (for
    diff); otherwise they are dropped as soon as compared, so check holds one file at a time.

    Reading every output file back (46 MB at 1,000 services) is shared with a forked child.

    The manifest says what wasm-gitops wrote, but a pull request can edit it: an entry the plan no
    longer has is removed only when safepath's rules allow it and its hash matches; any other entry
    is reported (Changes.disowned) and left alone, so check and diff never call stale what render
    would not delete."""
    ch = Changes()
    manifest = read_manifest(tree)
    owned = manifest.files

    def statuses(rels: Sequence[str]) -> list[_Status]:
        found: list[_Status] = []
        for rel in rels:
            current = _read(tree, rel)
            if current is None:
                found.append((rel, "added", None))
            elif current == plan.files[rel]:
                found.append((rel, "unchanged", None))
            else:
                if rel == MANIFEST or rel in owned:
                    edited = rel != MANIFEST and sha256_hex(current) != owned.get(rel)
                    status = "hand_edited" if edited else "changed"
                else:
                    status = "clash"
                found.append((rel, status, current if keep_current else None))
        return found

    found = parallel.map_chunks(statuses, sorted(plan.files))
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
    overwritten = [f"{tree.out / rel}: is {what}, an input of the spec; wasm-gitops never overwrites an "
                   "input: choose another --out" for rel in ch.changed if (what := inputs.what(tree.path(rel)))]
    if overwritten:
        raise OutputError("\n".join(overwritten))
    _judge_stale(ch, plan, tree, inputs, manifest, keep_current)
    return ch


def _judge_stale(ch: Changes, plan: Plan, tree: OutputTree, inputs: Inputs, manifest: Manifest,
                 keep_current: bool) -> None:
    """The manifest's entries the plan no longer has: removed, or disowned with a warning."""
    owned = manifest.files
    for rel in sorted(set(owned) - set(plan.files)):
        why, current = _stale(tree, inputs, rel)
        if why:
            line, column = manifest.position(rel)
            ch.disowned.append(Finding(
                str(tree.out / MANIFEST), line, column, f"names {rel!r}, which render leaves alone: {why}; "
                "remove the entry (render rewrites the manifest without it)", "warning"))
            continue
        if current is None:
            continue
        if keep_current:
            ch.current[rel] = current
        if not _SHA256.fullmatch(owned[rel]) or sha256_hex(current) != owned[rel]:
            ch.hand_edited.append(rel)
        ch.removed.append(rel)
