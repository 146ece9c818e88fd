"""Compose a YAML document with libyaml and build plain data from it ourselves, keeping positions."""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Finding, Severity
from ..schema_errors import json_path
from .scalars import BOOL, FLOAT, INT, NULL, TAG
from .text import SEPARATOR_MESSAGE, SEPARATORS, SpecSyntaxError, char_at, decode_utf8, reader_finding

try:  # libyaml is in every PyYAML wheel we install; the pure loader keeps the same marks.
    _BaseLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - only on a PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader


Path = tuple[str | int, ...]

MAX_SPEC_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
# A spec of 5,000 services is ~300k nodes; an alias bomb expands exponentially. The cap is on nodes
# *after* alias expansion, so it bounds memory and time whatever the nesting of the aliases.
MAX_EXPANDED_NODES = 1_000_000

_ALLOWED_TAGS = {TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}


# Outside YAML's printable set (tab, LF and CR are fine); go-yaml also refuses the BOM inside text.
# Spelled as the characters refused rather than the complement of those allowed: the same set (checked
# over every code point in test_yamlio), but it compiles in under a millisecond instead of ten.
_NOT_PRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufeff\ufffe\uffff]")


class _Loader(_BaseLoader):
    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:  # quoted: always a string
                return TAG + "str"
            if NULL.match(value):
                return TAG + "null"
            if BOOL.match(value):
                return TAG + "bool"
            if INT.match(value):
                return TAG + "int"
            if FLOAT.match(value):
                return TAG + "float"
            return TAG + "str"
        if kind is yaml.SequenceNode:
            return TAG + "seq"
        return TAG + "map"


class _RawLoader(_BaseLoader):
    """For reading fields out of user manifests: every scalar is text, nothing is resolved."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            return TAG + "str"
        return TAG + ("seq" if kind is yaml.SequenceNode else "map")


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Document:
    """Plain data, and the composed node tree it was built from, where positions are looked up.

    Positions are found on demand, by walking the tree along a path: only a problem needs one, and
    recording two per node up front cost more than the rest of the parse at mesh scale.
    """

    file: str
    data: Any
    root: yaml.Node | None = None
    # Where each alias is used (by the path it stands at) and its anchor: a value reached through an
    # alias is reported where the alias is, since the node itself sits at the anchor.
    aliases: dict[Path, tuple[yaml.Mark, yaml.Mark | None]] = field(default_factory=dict)

    def via_alias(self, path: Iterable[str | int]) -> tuple[yaml.Mark, yaml.Mark | None] | None:
        """The outermost alias the path goes through, if any."""
        if not self.aliases:
            return None
        prefix: Path = ()
        for part in path:
            prefix = (*prefix, part)
            use = self.aliases.get(prefix)
            if use is not None:
                return use
        return None

    def position(self, path: Iterable[str | int], *, key: bool = False) -> Position:
        """Position of the key (or value) at path; the nearest enclosing one if the path is not there."""
        path = tuple(path)
        use = self.via_alias(path)
        if use is not None:
            return Position(use[0].line + 1, use[0].column + 1)
        steps: list[tuple[yaml.Node | None, yaml.Node]] = []  # (key node or None for an index, value)
        node = self.root
        for part in path:
            step = _child(node, part)
            if step is None:
                break
            steps.append(step)
            node = step[1]
        if key:
            for key_node, _ in reversed(steps):
                if key_node is not None:
                    return _mark(key_node)
        elif steps:
            return _mark(steps[-1][1])
        return _mark(self.root) if self.root is not None else Position(1, 1)

    def finding(self, path: Iterable[str | int], message: str, *, key: bool = False,
                severity: Severity = "error") -> Finding:
        p = tuple(path)
        pos = self.position(p, key=key)
        return Finding(self.file, pos.line, pos.column, message + _anchor_hint(self.via_alias(p)),
                       severity, json_path(p))


def _anchor_hint(use: tuple[yaml.Mark, yaml.Mark | None] | None) -> str:
    if use is None or use[1] is None:
        return ""
    return f" (through an alias: the value is written at its anchor, line {use[1].line + 1})"


def _is_data_key(key_node: yaml.Node) -> bool:
    """A key the builder keeps: a string, and not a merge key (those are refused)."""
    return (isinstance(key_node, yaml.ScalarNode) and key_node.tag == TAG + "str"
            and not (key_node.value == "<<" and not key_node.style))


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        # The first of duplicate keys, as the builder keeps the first.
        return next(((k, v) for k, v in node.value if _is_data_key(k) and k.value == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None


def _mark(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, doc: Document, separators: list[int] | None = None) -> None:
        self.doc = doc
        self.separators = separators or []  # character offsets of raw U+2028/U+2029/U+0085
        self.findings: list[Finding] = []
        self.expanded = 0
        self.too_big = False

    def fail(self, node: yaml.Node, message: str, path: Path | None = None) -> None:
        use = self.doc.via_alias(path) if path is not None else None
        pos = Position(use[0].line + 1, use[0].column + 1) if use is not None else _mark(node)
        self.findings.append(Finding(self.doc.file, pos.line, pos.column, message + _anchor_hint(use)))

    def build(self, node: yaml.Node, depth: int, path: Path | None = None) -> Any:
        """`path` is tracked only when the document has aliases (positions of what they reach)."""
        self.expanded += 1
        if self.expanded > MAX_EXPANDED_NODES:
            if not self.too_big:
                self.too_big = True
                self.fail(node, f"the document expands to more than {MAX_EXPANDED_NODES:,} nodes "
                          "(an alias bomb?); write it out without so many aliases", path)
            return None
        if depth > MAX_DEPTH:
            self.fail(node, f"nesting deeper than {MAX_DEPTH} levels; flatten the document", path)
            return None
        tag = node.tag
        if tag not in _ALLOWED_TAGS:
            self.fail(node, f"YAML tag {tag!r} is not allowed; remove the tag (only plain YAML data is "
                      "accepted)", path)
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if tag != TAG + "seq":
                self.fail(node, f"tag {tag!r} does not fit a sequence; remove it", path)
                return None
            if path is None:
                return [self.build(item, depth + 1) for item in node.value]
            return [self.build(item, depth + 1, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.MappingNode)
        if tag != TAG + "map":
            self.fail(node, f"tag {tag!r} does not fit a mapping; remove it", path)
            return None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == TAG + "merge" or (isinstance(key_node, yaml.ScalarNode)
                                                 and key_node.value == "<<" and not key_node.style):
                self.fail(key_node, "merge keys (<<) are not supported; write the keys out in full", path)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != TAG + "str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self.fail(key_node, f"key {shown!r} is not a string; quote it (keys must be strings)", path)
                continue
            key = key_node.value
            if self.separators and self.holds_separator(key_node):
                self.fail(key_node, SEPARATOR_MESSAGE, path)
                continue
            if key in out:
                first = _child(node, key)
                where = f" (first at line {_mark(first[0]).line})" if first and first[0] else ""
                self.fail(key_node, f"duplicate key {key!r}{where}; keep one of them", path)
                continue
            out[key] = self.build(value_node, depth + 1, None if path is None else (*path, key))
        return out

    def holds_separator(self, node: yaml.Node) -> bool:
        """Whether a raw U+2028, U+2029 or U+0085 lies inside the node's text."""
        i = bisect.bisect_left(self.separators, node.start_mark.index)
        return i < len(self.separators) and self.separators[i] < node.end_mark.index

    def scalar(self, node: yaml.ScalarNode, path: Path | None = None) -> Any:
        value: str = node.value
        tag = node.tag
        if self.separators and self.holds_separator(node):
            self.fail(node, SEPARATOR_MESSAGE, path)
            return None
        bad = _NOT_PRINTABLE.search(value)
        if bad:
            # Escapes in double quotes can smuggle them in; kustomize (go-yaml) cannot carry them out.
            self.fail(node, f"the value holds the control character U+{ord(bad.group()):04X}, which YAML "
                      "tools downstream refuse; remove it", path)
            return None
        try:
            if tag == TAG + "str":
                return value
            if tag == TAG + "null":
                if not NULL.match(value):
                    raise ValueError
                return None
            if tag == TAG + "bool":
                if not BOOL.match(value):
                    raise ValueError
                return value.lower() == "true"
            if tag == TAG + "int":
                return int(value, 0) if value.startswith(("0o", "0x")) else int(value, 10)
            if tag == TAG + "float":
                low = value.lower()
                if low.endswith(".inf"):
                    return -math.inf if low.startswith("-") else math.inf
                if low == ".nan":
                    return math.nan
                return float(value)
        except ValueError:
            pass
        self.fail(node, f"{value!r} is not a valid {tag.removeprefix(TAG)}; fix the value or drop the tag", path)
        return None


def _refuse_bombs(root: yaml.Node, file: str) -> None:
    """Size of the tree after alias expansion, computed per distinct node (linear in the file), so an
    alias bomb is refused before a single node of it is expanded."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if depth <= MAX_DEPTH:  # deeper nesting is reported by the builder
            if isinstance(node, yaml.SequenceNode):
                total += sum(size(n, depth + 1) for n in node.value)
            elif isinstance(node, yaml.MappingNode):
                total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        total = min(total, MAX_EXPANDED_NODES + 1)
        sizes[id(node)] = total
        return total

    if size(root, 0) > MAX_EXPANDED_NODES:
        # Point at the first alias whose target is large: that is where the expansion explodes.
        where = root.start_mark
        for nid, n in _aliased(root):
            if sizes.get(nid, 0) > 1000:
                where = n.start_mark
                break
        raise SpecSyntaxError([Finding(file, where.line + 1, where.column + 1,
                                       f"the document expands to more than {MAX_EXPANDED_NODES:,} nodes "
                                       "through aliases (an alias bomb?); write it out without them")])


def _aliased(root: yaml.Node) -> Iterator[tuple[int, yaml.Node]]:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            yield id(node), node
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
        elif isinstance(node, yaml.MappingNode):
            for k, v in reversed(node.value):
                stack.extend([v, k])


_ALIAS = re.compile(r"(?:^|[\s\[{,])\*[^\s,\[\]{}]", re.M)


def _alias_uses(text: str) -> dict[Path, tuple[yaml.Mark, yaml.Mark | None]]:
    """For each alias in the document: the path it stands at, its own mark and its anchor's.

    One pass over libyaml's events (the node tree no longer says where an alias was used: it holds
    the anchored node itself there)."""
    loader = _RawLoader(text)
    anchors: dict[str, yaml.Mark] = {}
    uses: dict[Path, tuple[yaml.Mark, yaml.Mark | None]] = {}
    # Frames of open collections: [path or None, is_map, expecting_key, key or index]
    stack: list[list[Any]] = []
    node_events = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)

    def advance() -> None:
        if stack:
            frame = stack[-1]
            if frame[1]:
                frame[2] = True
            else:
                frame[3] += 1

    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                was_key = stack.pop()[4]
                if not was_key:
                    advance()
                continue
            if not isinstance(event, node_events):
                continue
            is_key = False
            path: Path | None = ()
            if stack:
                frame = stack[-1]
                if frame[1] and frame[2]:
                    is_key, path = True, None
                    frame[2] = False
                    frame[3] = event.value if isinstance(event, yaml.ScalarEvent) else None
                elif frame[1]:
                    path = None if frame[0] is None or frame[3] is None else (*frame[0], frame[3])
                else:
                    path = None if frame[0] is None else (*frame[0], frame[3])
            if isinstance(event, yaml.AliasEvent):
                if path is not None:
                    uses[path] = (event.start_mark, anchors.get(event.anchor))
            elif event.anchor is not None:
                anchors[event.anchor] = event.start_mark
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                is_map = isinstance(event, yaml.MappingStartEvent)
                stack.append([path, is_map, True, None if is_map else 0, is_key])
            elif not is_key:
                advance()
    finally:
        loader.dispose()
    return uses


def load_document(text: str | bytes, file: str) -> Document:
    """Parse one YAML document into plain data with positions; raise SpecSyntaxError with findings."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecSyntaxError([Finding(file, 1, 1, f"file is {len(text):,} bytes, more than the "
                                       f"{MAX_SPEC_BYTES:,} accepted; split or shorten it")])
    if isinstance(text, bytes):
        text = decode_utf8(text, file)
    separators: list[int] = []
    if SEPARATORS.search(text):
        separators = [m.start() for m in SEPARATORS.finditer(text)]
        text = SEPARATORS.sub(" ", text)  # one character for one: every offset stays
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = e.problem or e.context or "invalid YAML"
        hint = ""
        if "found another document" in problem:
            problem, hint = "the file holds more than one YAML document", "; keep one (remove the '---')"
        if mark is not None and char_at(text, mark.line, mark.column) == "\t" or "\\t" in problem:
            hint = "; YAML indents with spaces, never tabs: replace the tab"
        raise SpecSyntaxError([Finding(file, line, col, f"YAML syntax error: {problem}{hint}")]) from None
    except yaml.reader.ReaderError as e:  # control characters: an offset, not a mark
        raise SpecSyntaxError([reader_finding(e, text, file)]) from None
    except yaml.YAMLError as e:
        raise SpecSyntaxError([Finding(file, 1, 1, f"YAML syntax error: {e}")]) from None
    except RecursionError:
        raise SpecSyntaxError([Finding(file, 1, 1, f"nesting deeper than {MAX_DEPTH} levels; "
                                       "flatten the document")]) from None
    finally:
        loader.dispose()
    doc = Document(file, None, node)
    if node is None:
        raise SpecSyntaxError([Finding(file, 1, 1, "file is empty; start from 'wasm-gitops init'")])
    if "*" in text:  # without an alias nothing is expanded: the tree is as big as the text says
        _refuse_bombs(node, file)
        if _ALIAS.search(text):
            doc.aliases = _alias_uses(text)
    builder = _Builder(doc, separators)
    doc.data = builder.build(node, 0, () if doc.aliases else None)
    if builder.findings:
        raise SpecSyntaxError(builder.findings)
    return doc


def compose_all(text: str, file: str) -> list[yaml.Node]:
    """The node trees of every document in a user's Kubernetes manifest, for reading a few fields.

    libyaml composes in C; nothing is constructed in Python, so reading a Deployment's labels out of
    a large manifest costs next to nothing. Aliases stay shared nodes (a bomb costs no memory), and
    callers only follow the paths they need, never walking the whole tree.
    """
    loader = _RawLoader(text)
    try:
        nodes = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                nodes.append(node)
        return nodes
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecSyntaxError([Finding(file, line, col, f"YAML syntax error: {e.problem}")]) from None
    except yaml.reader.ReaderError as e:
        raise SpecSyntaxError([reader_finding(e, text, file)]) from None
    except yaml.YAMLError as e:
        raise SpecSyntaxError([Finding(file, 1, 1, f"YAML error: {e}")]) from None
    except RecursionError:
        raise SpecSyntaxError([Finding(file, 1, 1, "nesting too deep for a manifest; flatten it")]) from None
    finally:
        loader.dispose()
