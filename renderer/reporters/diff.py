"""`wasm-gitops diff`'s review as text, GitHub annotations or json (the markdown comment has a module of
its own: renderer/reporters/markdown.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..clusters import changes_line
from ..errors import Finding
from ..review import EFFECTS, HOT, LISTENER_DRAINS, SIGN, Chain, FieldChange, ModuleChange, ObjectChange, Review, arrow
from .base import AS_GIVEN, Locator, document, escape_data, escape_property, reporter
from .findings import finding_records, github_findings

_WIDE_LINE = 100


def module_lines(m: ModuleChange) -> list[str]:
    old_abi, new_abi = (v or "none" for v in m.abi)
    lines = [f"module ABI: {new_abi}" if old_abi == new_abi or m.same_code is None
             else f"module ABI: {old_abi} -> {new_abi}"]
    if m.same_code is None:
        return lines
    if m.same_code:
        return [*lines, "module code: identical; only custom sections (names, build ids, debug info) changed"]
    for label, added, removed in (("proxy_on_* callbacks", m.callbacks_added, m.callbacks_removed),
                                  ("imports", m.imports_added, m.imports_removed)):
        if added or removed:
            lines.append(f"module {label}: " + ", ".join([*(f"+{a}" for a in added), *(f"-{r}" for r in removed)]))
        else:
            lines.append(f"module {label}: unchanged")
    return lines

def module_record(m: ModuleChange) -> dict[str, Any]:
    return {"abi_before": m.abi[0], "abi_after": m.abi[1], "callbacks_added": list(m.callbacks_added),
            "callbacks_removed": list(m.callbacks_removed), "imports_added": list(m.imports_added),
            "imports_removed": list(m.imports_removed), "only_custom_sections_changed": m.same_code}


def chain_text(c: Chain) -> str:
    return f"filter chain of {c.service}: {arrow(c.before)} becomes {arrow(c.after)}"


def summary(r: Review) -> str:
    added = r.count("added")
    text = (f"{added} object{'' if added == 1 else 's'} added, {r.count('changed')} changed, "
            f"{r.count('removed')} removed; workloads that will roll: {', '.join(r.rolling) or 'none'}")
    drains = r.with_effect(LISTENER_DRAINS)
    if drains:
        text += f"; listeners that drain: {len(drains)} object{'' if len(drains) == 1 else 's'}"
    hot = r.with_effect(HOT)
    if hot:
        text += f"; applied without a restart: {len(hot)}"
    if r.leaving:
        text += f"; workloads leaving the tree (pruned unless managed elsewhere): {', '.join(r.leaving)}"
    if r.clusters:
        text += f"; {changes_line(r.clusters)}"
    return text


def _field_lines(change: FieldChange) -> list[str]:
    if change.old is None:
        return [f"{change.path}: {change.new}"] if change.new is not None else []
    if change.new is None:
        return [f"{change.path}: {change.old} (removed)"]
    one = f"{change.path}: {change.old} -> {change.new}"
    if len(one) <= _WIDE_LINE:
        return [one]
    return [f"{change.path}:", f"  - {change.old}", f"  + {change.new}"]


def _file_of(o: ObjectChange, where: Locator) -> str:
    return where.tree_file(o.file)


def _title(o: ObjectChange, where: Locator = AS_GIVEN) -> str:
    # A kustomization.yaml is named by its file.
    shown = "" if o.id.name == o.file else f"  ({_file_of(o, where)})"
    return f"{SIGN[o.state]} {o.id}{shown}; {o.effect}"


def _body(o: ObjectChange) -> list[str]:
    lines = [o.note] if o.note else []
    # A field that appears or disappears inside a changed object is marked; an added object's fields
    # are all new, and marking each would only add noise.
    marked = o.state == "changed" or bool(o.note)
    for change in o.fields:
        if marked and change.old is None:
            lines += [f"+ {line}" for line in _field_lines(change)]
        elif marked and change.new is None:
            lines += [f"- {change.path}: {change.old}"]
        else:
            lines += _field_lines(change)
    if o.module is not None:
        lines += module_lines(o.module)
    return lines


def notes(r: Review, where: Locator = AS_GIVEN) -> list[str]:
    lines = [f"note: {where.tree_file(f)} was edited by hand; render overwrites it" for f in r.hand_edited]
    lines += [f"note: {where.tree_file(f)} on disk is not one YAML object; it is shown as replaced"
              for f in r.unreadable]
    lines += [f"note: leaves the tree, not listed: {u}" for u in r.unlisted]
    return lines


@reporter("review", "text")
def text_review(r: Review, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (),
                clean: bool | None = None) -> str:
    lines = []
    for o in r.objects:
        lines.append(_title(o, where))
        lines += [f"    {line}" for line in _body(o)]
    lines += [chain_text(c) for c in r.chains]
    lines += notes(r, where)
    if lines:
        lines.append("")
    lines.append(summary(r))
    return "".join(line + "\n" for line in lines)


@reporter("review", "github")
def github_review(r: Review, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (),
                  clean: bool | None = None) -> str:
    # The summary first: GitHub shows only the first few annotations of a step.
    lines = [f"::notice title=wasm-gitops diff::{escape_data(summary(r))}"]
    for o in r.objects:
        title = f"{SIGN[o.state]} {o.id} ({o.effect})"
        body = "\n".join(_body(o)) or f"{o.state}"
        lines.append(f"::notice file={escape_property(where.tree_file(o.file, annotation=True))},"
                     f"title={escape_property(title)}::{escape_data(body)}")
    lines += [f"::notice title=filter chain::{escape_data(chain_text(c))}" for c in r.chains]
    lines += [f"::warning::{escape_data(n)}" for n in notes(r, where)]
    return lines[0] + "\n" + github_findings(warnings, where) + "".join(line + "\n" for line in lines[1:])


@reporter("review", "json")
def review_json(r: Review, where: Locator = AS_GIVEN, warnings: Sequence[Finding] = (),
                clean: bool | None = None) -> str:
    return document({
        "valid": True,
        # The check's own verdict when there is one: it also knows about an interrupted render.
        "clean": (not r.objects and not r.hand_edited and not r.unreadable) if clean is None else clean,
        "summary": {"added": r.count("added"), "changed": r.count("changed"), "removed": r.count("removed"),
                    "workloads_that_roll": list(r.rolling), "workloads_leaving": list(r.leaving),
                    "effects": {e: len(r.with_effect(e)) for e in EFFECTS}},
        "objects": [{"state": o.state, "kind": o.id.kind, "namespace": o.id.namespace, "name": o.id.name,
                     "file": where.tree_file(o.file), "effect": o.effect, "note": o.note,
                     "fields": [{"path": c.path, "old": c.old, "new": c.new} for c in o.fields],
                     "module": module_record(o.module) if o.module else None} for o in r.objects],
        "chains": [{"service": c.service, "before": list(c.before), "after": list(c.after)} for c in r.chains],
        "edited_by_hand": [where.tree_file(f) for f in r.hand_edited],
        "unreadable": [where.tree_file(f) for f in r.unreadable],
        "unlisted": list(r.unlisted),
        "problems": finding_records(warnings, where),
        **({"clusters": [c.as_dict() for c in r.clusters]} if r.clusters else {}),
    })
