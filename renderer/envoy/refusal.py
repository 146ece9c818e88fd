"""What Envoy's log says about a listener it refused in `--mode validate`: which one, and why."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    listener: str
    reasons: tuple[str, ...]
    module: bool  # the module itself (not its configuration) is what Envoy refused


# "[2026-12-01 08:23:02.881][15081][warning][wasm] [source/extensions/common/wasm/context.cc:1154] text"
_ENTRY = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\]\[\d+\]\[(\w+)\]\[([\w-]+)\] \[[^\]]*\] ?(.*)$")
_BEGIN = re.compile(r"begin add/update listener: name=(\S+)")
_UNABLE = re.compile(r"Unable to create Wasm plugin (\S+)")
_INIT_ERROR = re.compile(r"^error initializing configuration '[^']*': (.*)$")
# Envoy's own summary of a failure it has already explained in the lines before.
_GENERIC = (re.compile(r"^Plugin \S+ failed to load$"), re.compile(r"^Plugin configured to fail closed failed to load$"))
_SEVERE = frozenset({"warning", "error", "critical"})
# The module itself: it cannot be compiled, linked or started, whatever its configuration.
_MODULE = re.compile(r"Failed to (?:initialize|load) Wasm code|Failed to create Wasm VM|Failed to start base Wasm"
                     r"|Bad function signature|missing import")
# proxy_on_configure returned false (or trapped): the configuration, not the module, was refused.
_CONFIGURE = re.compile(r"Failed to configure base Wasm plugin|proxy_on_configure")


@dataclass(frozen=True)
class LogEntry:
    level: str
    component: str
    text: str  # the first line, without timestamp, thread, level, component and source location


def log_entries(log: str) -> list[LogEntry]:
    """Envoy's log as entries; continuation lines (a Wasm backtrace) are left out: one line per entry."""
    out: list[LogEntry] = []
    for line in log.splitlines():
        m = _ENTRY.match(line)
        if m is not None:
            out.append(LogEntry(m.group(1), m.group(2), m.group(3).strip()))
    return out


def failure_of(log: str, listeners: Sequence[str]) -> Failure | None:
    """Which of our listeners Envoy gave up on, and why, from a `--mode validate` log at debug level.

    The listener is the one named by "Unable to create Wasm plugin <name>" (our plugins are named like
    their listeners), else the last one Envoy began to add; the reasons are the warning-or-worse lines
    logged since it began that listener."""
    entries = log_entries(log)
    known = set(listeners)
    begun: str | None = None
    start = 0
    named: str | None = None
    for i, e in enumerate(entries):
        m = _BEGIN.search(e.text)
        if m is not None and m.group(1) in known:
            begun, start = m.group(1), i + 1
        u = _UNABLE.search(e.text)
        if u is not None and u.group(1) in known:
            named = u.group(1)
    listener = named or begun
    if listener is None:
        return None
    reasons: list[str] = []
    final: str | None = None
    for e in entries[start:]:
        if e.level not in _SEVERE:
            continue
        init = _INIT_ERROR.match(e.text)
        if init is not None:
            final = init.group(1)
            continue
        # Only the Wasm extension's lines explain a plugin (not, say, a deprecated-field notice).
        if e.component != "wasm" or any(g.match(e.text) for g in _GENERIC):
            continue
        reasons.append(e.text)
    if not reasons and final is not None:
        reasons.append(final)  # e.g. a proto constraint Envoy checks before any Wasm runs
    last = log.rstrip().rsplit("\n", 1)[-1]
    if last.startswith("(envoy --mode validate did not answer"):
        reasons.append(last.strip("()") + ": a loop in the module's start or configure callback?")
    if not reasons:
        reasons.append("Envoy gave no reason")
    module = any(_MODULE.search(r) for r in reasons) or not any(_CONFIGURE.search(r) for r in reasons)
    return Failure(listener, tuple(_dedup(reasons)), module)


def _dedup(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
