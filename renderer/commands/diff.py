"""`wasm-gitops diff`: what render would change, object by object, with the effect of each change on the
running mesh (renderer/review/), or as a unified diff of the files. Exit 1 when it would change anything."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import core
from ..core import CheckResult
from ..envoy.load import EnvoyStep
from ..errors import UsageError
from ..plan import MANIFEST
from ..review import Review, build_review, decoded


@dataclass(frozen=True)
class Reviewed:
    review: Review
    result: CheckResult


@dataclass(frozen=True)
class Unified:
    text: str
    result: CheckResult


def review(spec_path: Path, out: Path | None = None, envoy: EnvoyStep = core.ENVOY) -> Reviewed:
    prepared = core.prepare(spec_path, out, keep_objects=True, envoy=envoy)
    result = core.compare_prepared(prepared, keep_current=True)  # the check's own comparison, on the plan just built
    root = str(prepared.spec.filter_set.root)
    return Reviewed(build_review(result.changes, prepared.plan, prepared.out, root, result.clusters), result)


def cost_lines(fmt: str, split_dir: Path | None, cost_report: Path | None) -> Mapping[str, str] | None:
    """The options that go with markdown only, checked before any work; the cost report's lines."""
    if split_dir is not None and fmt != "markdown":
        raise UsageError("--split goes with --format markdown")
    if cost_report is not None and fmt != "markdown":
        raise UsageError("--cost goes with --format markdown")
    costs = None
    if cost_report is not None:
        from ..cost.committed import read_cost_lines

        costs = read_cost_lines(cost_report)
    if split_dir is not None:
        check_split_dir(split_dir)
    return costs


def check_split_dir(directory: Path) -> None:
    """The parts go into a directory of their own: never over files someone else put there."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise UsageError(f"{directory}: not a directory; --split needs a new or empty directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise UsageError(f"{directory}: not empty; --split writes part-1-of-N.md ... into a new or empty "
                         "directory")


def write_parts(directory: Path, parts: Sequence[str]) -> list[Path]:
    check_split_dir(directory)
    written = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for number, text in enumerate(parts, 1):
            path = directory / f"part-{number}-of-{len(parts)}.md"
            with open(path, "x", encoding="utf-8", newline="\n") as fh:  # "x": the directory was empty
                fh.write(text)
            written.append(path)
    except OSError as e:
        raise UsageError(f"{directory}: cannot write the comment there: {e.strerror or e}") from None
    return written


# A line longer than this (base64 of a binary) is summarised, not printed.
_LONG = 400


def _display_lines(data: bytes) -> list[str]:
    out = []
    for line in data.decode("utf-8", "replace").splitlines(keepends=True):
        if len(line) > _LONG:
            head = line[: line.find(":") + 1] if ":" in line[:120] else ""
            value = line[len(head):].strip()
            binary = decoded(value)
            if binary is not None:
                line = (f"{head} <{len(value):,} characters of base64: {len(binary):,} bytes, sha256 of the "
                        f"binary {hashlib.sha256(binary).hexdigest()[:12]}...>\n")
            else:
                line = (f"{head} <{len(value):,} characters, sha256 of this text "
                        f"{hashlib.sha256(value.encode()).hexdigest()[:12]}...>\n")
        out.append(line)
    return out


def unified(spec_path: Path, out: Path | None = None, envoy: EnvoyStep = core.ENVOY) -> Unified:
    from difflib import unified_diff  # only diff needs it: not imported by every command

    prepared = core.prepare(spec_path, out, envoy=envoy)
    result = core.compare_prepared(prepared, keep_current=True)
    chunks: list[str] = []
    ch = result.changes
    # The manifest's hash lines last: they restate the files above, they are not what to review.
    for rel in sorted(ch.added + ch.changed + ch.removed, key=lambda p: (p == MANIFEST, p)):
        old = ch.current.get(rel, b"")
        new = prepared.plan.files.get(rel, b"")
        a = f"a/{rel}" if rel not in ch.added else "/dev/null"
        b = f"b/{rel}" if rel not in ch.removed else "/dev/null"
        chunks.extend(unified_diff(_display_lines(old), _display_lines(new), a, b))
    return Unified("".join(chunks), result)
