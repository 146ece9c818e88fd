"""`wasm-gitops build`: compile the filters that have a build: section, in Docker or locally."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import build as builder


@dataclass(frozen=True)
class BuildResult:
    built: tuple[str, ...]  # the filters built; empty: no filter has a build: section


def build(spec_path: Path, mode: str, names: Iterable[str], env: Mapping[str, str],
          say: Callable[[str], None]) -> BuildResult:
    """mode: docker (the SDK image) or local. `say` hears each step as it starts: a build takes minutes,
    and its progress is the point."""
    from ..spec import load_build_targets

    targets = load_build_targets(spec_path, names)
    if not targets:
        return BuildResult(())
    if mode == "docker":
        builder.run_docker_builds(targets, env, say)
    else:
        builder.run_local_builds(targets, builder.local_compiler(), say)
    return BuildResult(tuple(t.name for t in targets))
