"""All YAML in one place: a position-keeping, hostile-input-safe loader and the one emitter.

Loading composes the node tree with libyaml (PyYAML's C composer keeps line/column marks and is ~20x
faster than ruamel.yaml's round-trip loader on a 1,000-service spec), then builds plain Python data
ourselves so that we control every rule: YAML 1.2 core scalars (``on``/``no`` stay strings), duplicate
keys and non-string keys refused, only core tags allowed (never ``!!python/...``), aliases bounded by
the number of nodes they expand to, nesting bounded by depth.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from .errors import Finding

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

TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


# Outside YAML's printable set (tab, LF and CR are fine); go-yaml also refuses the BOM inside text.
# Spelled as the characters refused rather than the complement of those allowed: the same set (checked
# over every code point in test_yamlio), but it compiles in under a millisecond instead of ten.
_NOT_PRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufeff\ufffe\uffff]")


class _Loader(_BaseLoader):
    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:  # quoted: always a string
                return TAG + "str"
            if _NULL.match(value):
                return TAG + "null"
            if _BOOL.match(value):
                return TAG + "bool"
            if _INT.match(value):
                return TAG + "int"
            if _FLOAT.match(value):
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

    def position(self, path: Iterable[str | int], *, key: bool = False) -> Position:
        """Position of the key (or value) at path; the nearest enclosing one if the path is not there."""
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
                severity: str = "error") -> Finding:
        p = tuple(path)
        pos = self.position(p, key=key)
        return Finding(self.file, pos.line, pos.column, message, severity,  # type: ignore[arg-type]
                       json_path(p))


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


def json_path(path: Iterable[str | int]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _mark(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.findings: list[Finding] = []
        self.expanded = 0
        self.too_big = False

    def fail(self, node: yaml.Node, message: str) -> None:
        pos = _mark(node)
        self.findings.append(Finding(self.doc.file, pos.line, pos.column, message))

    def build(self, node: yaml.Node, depth: int) -> Any:
        self.expanded += 1
        if self.expanded > MAX_EXPANDED_NODES:
            if not self.too_big:
                self.too_big = True
                self.fail(node, f"the document expands to more than {MAX_EXPANDED_NODES:,} nodes "
                          "(an alias bomb?); write it out without so many aliases")
            return None
        if depth > MAX_DEPTH:
            self.fail(node, f"nesting deeper than {MAX_DEPTH} levels; flatten the document")
            return None
        tag = node.tag
        if tag not in _ALLOWED_TAGS:
            self.fail(node, f"YAML tag {tag!r} is not allowed; remove the tag (only plain YAML data is "
                      "accepted)")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            if tag != TAG + "seq":
                self.fail(node, f"tag {tag!r} does not fit a sequence; remove it")
                return None
            return [self.build(item, depth + 1) for item in node.value]
        assert isinstance(node, yaml.MappingNode)
        if tag != TAG + "map":
            self.fail(node, f"tag {tag!r} does not fit a mapping; remove it")
            return None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == TAG + "merge" or (isinstance(key_node, yaml.ScalarNode)
                                                 and key_node.value == "<<" and not key_node.style):
                self.fail(key_node, "merge keys (<<) are not supported; write the keys out in full")
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != TAG + "str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self.fail(key_node, f"key {shown!r} is not a string; quote it (keys must be strings)")
                continue
            key = key_node.value
            if key in out:
                first = _child(node, key)
                where = f" (first at line {_mark(first[0]).line})" if first and first[0] else ""
                self.fail(key_node, f"duplicate key {key!r}{where}; keep one of them")
                continue
            out[key] = self.build(value_node, depth + 1)
        return out

    def scalar(self, node: yaml.ScalarNode) -> Any:
        value: str = node.value
        tag = node.tag
        bad = _NOT_PRINTABLE.search(value)
        if bad:
            # Escapes in double quotes can smuggle them in; kustomize (go-yaml) cannot carry them out.
            self.fail(node, f"the value holds the control character U+{ord(bad.group()):04X}, which YAML "
                      "tools downstream refuse; remove it")
            return None
        try:
            if tag == TAG + "str":
                return value
            if tag == TAG + "null":
                if not _NULL.match(value):
                    raise ValueError
                return None
            if tag == TAG + "bool":
                if not _BOOL.match(value):
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
        self.fail(node, f"{value!r} is not a valid {tag.removeprefix(TAG)}; fix the value or drop the tag")
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


class SpecSyntaxError(Exception):
    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("\n".join(map(str, findings)))
        self.findings = findings


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n", line + 1)
    if line < len(lines) and column < len(lines[line]):
        return lines[line][column]
    return ""


def load_document(text: str | bytes, file: str) -> Document:
    """Parse one YAML document into plain data with positions; raise SpecSyntaxError with findings."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecSyntaxError([Finding(file, 1, 1, f"file is {len(text):,} bytes, more than the "
                                       f"{MAX_SPEC_BYTES:,} accepted; split or shorten it")])
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise SpecSyntaxError([Finding(file, line, 1, "file is not UTF-8 text; save it as UTF-8")]) from None
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
        if mark is not None and _char_at(text, mark.line, mark.column) == "\t" or "\\t" in problem:
            hint = "; YAML indents with spaces, never tabs: replace the tab"
        raise SpecSyntaxError([Finding(file, line, col, f"YAML syntax error: {problem}{hint}")]) from None
    except yaml.YAMLError as e:  # reader errors (control characters) carry no problem_mark
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
    builder = _Builder(doc)
    doc.data = builder.build(node, 0)
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
    except yaml.YAMLError as e:
        raise SpecSyntaxError([Finding(file, 1, 1, f"YAML error: {e}")]) from None
    finally:
        loader.dispose()


def node_get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def node_text(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def node_strings(node: yaml.Node | None) -> list[str]:
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [n.value for n in node.value if isinstance(n, yaml.ScalarNode)]


def node_string_map(node: yaml.Node | None) -> dict[str, str]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: v.value for k, v in node.value
            if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)}


# ---------------------------------------------------------------------------------------------- dump

GENERATED_HEADER = "# Generated by wasm-gitops from {spec}. DO NOT EDIT: change {spec} and run 'wasm-gitops render'.\n"

# The one emitter. Our objects are plain data (maps, lists, strings, numbers, booleans, null), so a
# small block-style emitter does the job of libyaml's at a tenth of the cost (PyYAML's representer
# is pure Python; at mesh scale it dominated a render). Every string goes out plain only when plain
# is unambiguous for YAML 1.1 readers (PyYAML, go-yaml v2 in kubectl/kustomize) and YAML 1.2 readers
# alike; otherwise single-quoted (nothing to escape but the quote), or double-quoted with JSON's
# escapes, ASCII only, when it holds a line break or a control character. A value can therefore
# never start a new key or a new document.

_PLAIN = re.compile(r"^[A-Za-z0-9_./+=~^$][A-Za-z0-9_./+=~^$ ,()@%*&!-]*$|^[A-Za-z0-9_./+=~^$][^\s#'\"\[\]{}|>]*$")
_GO_YAML_11_BOOLS = {"y", "Y", "n", "N"}
# Readers differ on what looks like a number: ruamel.yaml's YAML 1.2 resolver takes "_" and "+_" for
# integers (and then fails to build them). Anything made only of signs, digits, underscores and dots
# (with an exponent), and holds a digit or an underscore, is quoted, whatever a given resolver would say.
_NUMBERISH = re.compile(r"^[-+]?(?=[.]*[0-9_])[0-9_.]+(?:[eE][-+]?[0-9_]*)?$")
_RESOLVER_11 = yaml.resolver.Resolver()


@lru_cache(maxsize=65536)
def _scalar_text(value: str) -> str:
    if (value and value.isascii() and value.isprintable() and _PLAIN.match(value)
            and not value.endswith((" ", ":")) and ": " not in value
            and " #" not in value and value not in _GO_YAML_11_BOOLS
            and _RESOLVER_11.resolve(yaml.ScalarNode, value, (True, False)) == TAG + "str"
            and not (_NULL.match(value) or _BOOL.match(value) or _INT.match(value) or _FLOAT.match(value)
                     or _NUMBERISH.match(value))):
        return value
    if value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return _double_quoted(value)


_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _double_quoted(value: str) -> str:
    # YAML's own escapes (not JSON's: go-yaml rejects JSON's surrogate pairs for astral characters).
    out = []
    for ch in value:
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return _scalar_text(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    raise TypeError(f"cannot emit {type(value).__name__}")


def _emit(value: Any, indent: str, out: list[str]) -> None:
    """Append the lines of a map or list body at `indent`; scalars are handled inline."""
    if type(value) is dict:
        for key, item in value.items():
            k = _scalar_text(key if type(key) is str else str(key))
            kind = type(item)
            if kind is str:
                out.append(f"{indent}{k}: {_scalar_text(item)}\n")
            elif kind is dict and item:
                out.append(f"{indent}{k}:\n")
                _emit(item, indent + "  ", out)
            elif kind is list and item:
                out.append(f"{indent}{k}:\n")
                _emit(item, indent, out)  # kubectl's style: list items at the key's column
            else:
                out.append(f"{indent}{k}: {_inline(item)}\n")
        return
    for item in value:
        kind = type(item)
        if kind is str:
            out.append(f"{indent}- {_scalar_text(item)}\n")
        elif (kind is dict or kind is list) and item:
            body: list[str] = []
            _emit(item, indent + "  ", body)
            out.append(f"{indent}- {body[0][len(indent) + 2:]}")
            out.extend(body[1:])
        else:
            out.append(f"{indent}- {_inline(item)}\n")


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def dump(obj: Mapping[str, Any]) -> str:
    """Block style, key order as built, no line folding, LF, trailing newline."""
    out: list[str] = []
    _emit(dict(obj), "", out)
    return "".join(out)
