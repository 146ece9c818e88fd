"""The reviewer's view of a change: objects (their fields, their module), chains, and the whole review."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..clusters import ClusterChange, changes_line
from .effects import HOT, LISTENER_DRAINS, NO_MESH_EFFECT, PODS_ROLL, WORKLOADS, State

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

    def lines(self) -> list[str]:
        old_abi, new_abi = (v or "none" for v in self.abi)
        lines = [f"module ABI: {new_abi}" if old_abi == new_abi or self.same_code is None
                 else f"module ABI: {old_abi} -> {new_abi}"]
        if self.same_code is None:
            return lines
        if self.same_code:
            return [*lines, "module code: identical; only custom sections (names, build ids, debug info) changed"]
        for label, added, removed in (("proxy_on_* callbacks", self.callbacks_added, self.callbacks_removed),
                                      ("imports", self.imports_added, self.imports_removed)):
            if added or removed:
                lines.append(f"module {label}: " + ", ".join([*(f"+{a}" for a in added), *(f"-{r}" for r in removed)]))
            else:
                lines.append(f"module {label}: unchanged")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"abi_before": self.abi[0], "abi_after": self.abi[1], "callbacks_added": list(self.callbacks_added),
                "callbacks_removed": list(self.callbacks_removed), "imports_added": list(self.imports_added),
                "imports_removed": list(self.imports_removed), "only_custom_sections_changed": self.same_code}


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

    def text(self) -> str:
        return f"filter chain of {self.service}: {arrow(self.before)} becomes {arrow(self.after)}"


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

    def summary(self) -> str:
        added = self.count("added")
        text = (f"{added} object{'' if added == 1 else 's'} added, {self.count('changed')} changed, "
                f"{self.count('removed')} removed; workloads that will roll: {', '.join(self.rolling) or 'none'}")
        drains = self.with_effect(LISTENER_DRAINS)
        if drains:
            text += f"; listeners that drain: {len(drains)} object{'' if len(drains) == 1 else 's'}"
        hot = self.with_effect(HOT)
        if hot:
            text += f"; applied without a restart: {len(hot)}"
        if self.leaving:
            text += f"; workloads leaving the tree (pruned unless managed elsewhere): {', '.join(self.leaving)}"
        if self.clusters:
            text += f"; {changes_line(self.clusters)}"
        return text

    def tree_clusters(self, tree: str) -> list[ClusterChange]:
        return [c for c in self.clusters if c.tree == tree]

