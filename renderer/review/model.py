"""The reviewer's view of a change: objects (their fields, their module), chains, and the whole review."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..clusters import ClusterChange
from .effects import NO_MESH_EFFECT, PODS_ROLL, WORKLOADS, State

SIGN: dict[State, str] = {"added": "+", "changed": "~", "removed": "-"}


@dataclass(frozen=True, order=True)
class ObjectId:
    kind: str
    namespace: str  # "" when the object has none
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: str | None  # as displayed; None: the field is not there
    new: str | None


@dataclass(frozen=True)
class ModuleChange:
    """What changed inside a filter's WebAssembly module, next to its size and sha256."""

    abi: tuple[str | None, str | None]
    callbacks_added: tuple[str, ...]
    callbacks_removed: tuple[str, ...]
    imports_added: tuple[str, ...]
    imports_removed: tuple[str, ...]
    same_code: bool | None  # only custom sections differ; None when there is no old module


@dataclass(frozen=True)
class ObjectChange:
    state: State
    id: ObjectId
    file: str
    fields: tuple[FieldChange, ...] = ()
    effect: str = NO_MESH_EFFECT
    note: str = ""  # "replaces ..." / "replaced by ..." for a filter's content-named ConfigMap
    module: ModuleChange | None = None
    group: str = ""  # "base", "service <name>" or "" (the root and the controllers' objects)

    @property
    def rolls(self) -> bool:
        return self.effect == PODS_ROLL and self.id.kind in WORKLOADS


@dataclass(frozen=True)
class Chain:
    """A service's HTTP filter chain before and after, when it changes."""

    service: str
    before: tuple[str, ...]
    after: tuple[str, ...]


def arrow(names: Sequence[str]) -> str:
    return " -> ".join([*names, "router"])


@dataclass(frozen=True)
class Review:
    objects: tuple[ObjectChange, ...]
    rolling: tuple[str, ...]  # namespace/name of workloads whose pods roll
    leaving: tuple[str, ...]  # workloads whose overlay is gone: the controllers prune them
    hand_edited: tuple[str, ...]
    unreadable: tuple[str, ...]  # files on disk that no longer parse as one YAML object
    chains: tuple[Chain, ...] = ()
    unlisted: tuple[str, ...] = ()  # resources that leave the tree but could not be listed, and why
    clusters: tuple[ClusterChange, ...] = ()  # with clusters: each one, with the changed files it applies

    def count(self, state: State) -> int:
        return sum(1 for o in self.objects if o.state == state)

    def with_effect(self, effect: str) -> list[ObjectChange]:
        return [o for o in self.objects if o.effect == effect]

    def tree_clusters(self, tree: str) -> list[ClusterChange]:
        return [c for c in self.clusters if c.tree == tree]

