"""`wasm-gitops diff --format markdown`: the pull request comment, in parts that each fit GitHub's limit."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

from ..errors import Finding
from ..review import (
    EFFECTS,
    HOT,
    LISTENER_DRAINS,
    PRUNED,
    PRUNED_AFTER_ROLLOUT,
    SIGN,
    FieldChange,
    ObjectChange,
    Review,
    arrow,
)
from .base import AS_GIVEN, Locator, reporter
from .diff import module_lines, notes
from .findings import finding_line


def marker(part: int) -> str:
    """The first line of each part: the CI recipe finds its own comments by it, to update them in place."""
    return f"<!-- wasm-gitops diff part {part} -->"

_NAMES_IN_TABLE = 10


def _h(text: str) -> str:
    """Text outside code blocks: no HTML from a pull request's names, no table or emphasis breaks."""
    return html.escape(text, quote=True).replace("|", "&#124;").replace("*", "&#42;").replace("_", "&#95;") \
        .replace("`", "&#96;").replace("[", "&#91;").replace("~", "&#126;")  # ~ is GFM strikethrough


def _code(text: str) -> str:
    return f"<code>{_h(text)}</code>"


def _fence(lines: Sequence[str]) -> str:
    longest = max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)


def _line(text: str) -> str:
    # One value, one line: a newline in a value could otherwise start a line markdown reads as HTML.
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _diff_lines(o: ObjectChange) -> list[str]:
    lines = [f"# {o.note}"] if o.note else []
    for raw in o.fields:
        change = FieldChange(_line(raw.path), None if raw.old is None else _line(raw.old),
                             None if raw.new is None else _line(raw.new))
        if change.old is None and change.new is not None:
            lines.append(f"+ {change.path}: {change.new}")
        elif change.new is None and change.old is not None:
            lines.append(f"- {change.path}: {change.old}")
        elif change.old is not None and change.new is not None:
            lines += [f"  {change.path}:", f"-   {change.old}", f"+   {change.new}"]
    if o.module is not None:
        lines += [f"# {line}" for line in module_lines(o.module)]
    return lines


def _object_block(o: ObjectChange, where: Locator, budget: int | None = None) -> str:
    head = f"**{_h(SIGN[o.state])} {_h(o.id.kind)}** {_code(str(o.id).split(' ', 1)[1])} · **{o.effect}**"
    if o.id.name != o.file:
        head += f" · {_code(where.tree_file(o.file))}"
    lines = _diff_lines(o)
    if not lines:
        return head + "\n\n"
    fence = _fence(lines)
    text = f"{head}\n\n{fence}diff\n" + "".join(f"{line}\n" for line in lines) + f"{fence}\n\n"
    if budget is None or len(text) <= budget:
        return text
    # One object bigger than a whole comment: keep the lines that fit and say how many were left out;
    # the fence is still closed, so what follows renders as it should.
    kept: list[str] = []
    size = len(head) + 2 * len(fence) + 80
    for line in lines:
        if size + len(line) + 1 > budget:
            break
        kept.append(line)
        size += len(line) + 1
    kept.append(f"# ... {len(lines) - len(kept):,} more lines left out; run wasm-gitops diff to see them")
    return f"{head}\n\n{fence}diff\n" + "".join(f"{line}\n" for line in kept) + f"{fence}\n\n"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(_code(i) for i in items[:_NAMES_IN_TABLE])
    more = len(items) - _NAMES_IN_TABLE
    return shown + (f" and {more:,} more" if more > 0 else "") if items else "none"


def _summary_table(r: Review) -> str:
    def objects(effect: str) -> list[str]:
        return [str(o.id) for o in r.with_effect(effect)]

    rows = [
        ("objects added / changed / removed", f"{r.count('added'):,} / {r.count('changed'):,} / {r.count('removed'):,}"),
        (f"workloads whose pods roll ({len(r.rolling):,})", _names(r.rolling)),
        (f"listeners that drain ({len(objects(LISTENER_DRAINS)):,} objects)", _names(objects(LISTENER_DRAINS))),
        (f"applied without a restart, hot ({len(objects(HOT)):,})", _names(objects(HOT))),
        (f"pruned after rollout ({len(objects(PRUNED_AFTER_ROLLOUT)):,})", _names(objects(PRUNED_AFTER_ROLLOUT))),
        (f"leaving the tree, pruned ({len(objects(PRUNED)):,})", _names(objects(PRUNED))),
    ]
    return "| what | objects |\n|---|---|\n" + "".join(f"| {_h(a)} | {b} |\n" for a, b in rows)


def _cluster_table(r: Review) -> str:
    """With clusters: one row per cluster in rollout order, what it applies and whether it changes."""
    rows = "".join(f"| {_h(c.wave)} | {_code(c.name)} | {_code('trees/' + c.tree)} | "
                   f"{f'{len(c.files):,} file' + ('' if len(c.files) == 1 else 's') if c.changes else 'no change'} |\n"
                   for c in r.clusters)
    return "| wave | cluster | applies | changes |\n|---|---|---|---|\n" + rows


def _head(r: Review, where: Locator, warnings: Sequence[Finding], costs: Mapping[str, str]) -> str:
    text = f"{_summary_table(r)}\n"
    if r.clusters:
        text += f"{_cluster_table(r)}\n"
    if r.chains:
        text += "".join(f"- filter chain of {_code(c.service)}: {_code(arrow(c.before))} becomes "
                        f"{_code(arrow(c.after))}\n" for c in r.chains) + "\n"
    # One line per changed service that the cost report measured (wasm-gitops cost --json).
    changed = [name for g, _ in _groups(r) if (name := g.removeprefix("service ")) != g and name in costs]
    if changed:
        text += "".join(f"- {_code(name)}: {_h(costs[name])}\n" for name in changed) + "\n"
    lines = [*(finding_line(f, where) for f in warnings), *notes(r, where)]
    if lines:
        text += "".join(f"- {_h(n)}\n" for n in lines) + "\n"
    return text


def _groups(r: Review) -> list[tuple[str, list[ObjectChange]]]:
    found: dict[str, list[ObjectChange]] = {}
    for o in r.objects:
        found.setdefault(o.group, []).append(o)

    def key(group: str) -> tuple[int, str]:
        # Shared parts first, then each tree in the order of its first cluster, then each cluster's own.
        if group.startswith("tree "):
            order = [c.tree for c in r.clusters]
            tree = group.removeprefix("tree ")
            return (2, f"{order.index(tree) if tree in order else len(order):06d}")
        if group.startswith("cluster "):
            return (3, group)
        return (0 if group == "base" else 4 if group == "" else 1, group)

    return [(g, found[g]) for g in sorted(found, key=key)]


def _group_title(group: str, objects: Sequence[ObjectChange], r: Review | None = None) -> str:
    name = {"base": "base", "": "root kustomization and controllers"}.get(group, group)
    if r is not None and group.startswith("tree "):
        members = r.tree_clusters(group.removeprefix("tree "))
        waves = ", ".join(dict.fromkeys(c.wave for c in members))
        name += f" (cluster{'' if len(members) == 1 else 's'} {', '.join(c.name for c in members)}; wave {waves})"
    effects = sorted({o.effect for o in objects}, key=EFFECTS.index)
    return (f"{_h(name)}: {len(objects):,} object{'' if len(objects) == 1 else 's'} "
            f"({_h(', '.join(effects))})")


def markdown_parts(r: Review, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (), *,
                   max_chars: int = 65_536, split: bool = False, costs: Mapping[str, str] | None = None) -> list[str]:
    """The pull request comment: the title and summary table outside any fold, then one <details>
    per group (base, each service, the root) of per-object ```diff blocks. Each part stays within
    max_chars; a part ends between objects, never inside a block. Without `split` the comment is one
    part, cut after the last object that fits, with a line saying what was left out."""
    reserve = 400  # the title, the closing of an open fold, the "left out" line
    budget = max_chars - reserve
    head = _head(r, where, warnings, costs or {})
    if not r.objects and not r.hand_edited and not r.unreadable:
        head = "No change: the committed render matches filters.yaml.\n\n" + head
    parts: list[list[str]] = [[head]]
    sizes = [len(head)]
    left_out: list[ObjectChange] = []
    open_group: str | None = None
    close = "</details>\n\n"
    for group, objects in _groups(r):
        for index, o in enumerate(objects):
            if left_out:  # once cut, cut everything after: the comment reads in order
                left_out.append(o)
                continue
            block = _object_block(o, where, budget - 1000)
            opening = ("<details>\n<summary>" + _group_title(group, objects, r)
                       + (" (continued)" if index else "") + "</summary>\n\n")
            need = len(block) + (len(opening) if open_group != group else 0) + len(close)
            if sizes[-1] + need > budget and sizes[-1] > 0:
                if not split:
                    left_out.append(o)
                    continue
                if open_group is not None:
                    parts[-1].append(close)
                parts.append([])
                sizes.append(0)
                open_group = None
            if open_group != group:
                if open_group is not None:
                    parts[-1].append(close)
                    sizes[-1] += len(close)
                parts[-1].append(opening)
                sizes[-1] += len(opening)
                open_group = group
            parts[-1].append(block)
            sizes[-1] += len(block)
    if open_group is not None:
        parts[-1].append(close)
    if left_out:
        groups = sorted({o.group or "root" for o in left_out})
        parts[-1].append(f"**{len(left_out):,} more object{'' if len(left_out) == 1 else 's'} left out** "
                         f"({_h(', '.join(groups[:5]))}{' ...' if len(groups) > 5 else ''}) to stay within "
                         f"{max_chars:,} characters: run {_code('wasm-gitops diff')} locally, or post the "
                         f"comment in parts with {_code('--split')}.\n")
    total = len(parts)
    out = []
    for number, chunks in enumerate(parts, 1):
        title = "## wasm-gitops diff" + (f" (part {number} of {total})" if total > 1 else "")
        if number == 1:
            title += f"\n\n{_h(_short_summary(r))}"
        out.append(f"{marker(number)}\n{title}\n\n" + "".join(chunks).rstrip("\n") + "\n")
    return out


def _short_summary(r: Review) -> str:
    added = r.count("added")
    return (f"{added:,} object{'' if added == 1 else 's'} added, {r.count('changed'):,} changed, "
            f"{r.count('removed'):,} removed; {len(r.rolling):,} workload{'' if len(r.rolling) == 1 else 's'} "
            "will roll.")


@reporter("problems", "markdown")
def markdown_problems(items: Sequence[Finding], where: Locator = AS_GIVEN, command: str = "diff") -> str:
    errors = [f for f in items if f.severity == "error"]
    lines = "".join(f"- {_code(finding_line(f, where))}\n" for f in items)
    return (f"{marker(1)}\n## wasm-gitops diff\n\n**The spec is invalid** ({len(errors):,} "
            f"problem{'' if len(errors) == 1 else 's'}): nothing can be rendered until it is fixed.\n\n{lines}")


@reporter("review", "markdown")
def markdown_review(r: Review, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (),
                    clean: bool | None = None, *, max_chars: int = 65_536,
                    costs: Mapping[str, str] | None = None) -> str:
    """The comment as one part, cut where it would pass max_chars."""
    return markdown_parts(r, where, warnings, max_chars=max_chars, costs=costs)[0]
