"""A document's bytes as text, and what is wrong with text before any YAML is parsed from it."""

from __future__ import annotations

import re

import yaml

from ..errors import Finding


class SpecSyntaxError(Exception):
    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("\n".join(map(str, findings)))
        self.findings = findings


def char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n", line + 1)
    if line < len(lines) and column < len(lines[line]):
        return lines[line][column]
    return ""


# Longest first: the UTF-32LE mark begins with the UTF-16LE one.
_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32BE"), (b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\xfe\xff", "UTF-16BE"),
         (b"\xff\xfe", "UTF-16LE"))


def decode_utf8(raw: bytes, file: str) -> str:
    """The text of a file that must be UTF-8, or a finding that names what it is instead."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise SpecSyntaxError([Finding(file, 1, 1, f"file is {name} (it starts with the {name} byte-order "
                                           "mark), not UTF-8; save it as UTF-8")])
    head = raw[:4096]
    if head.count(0) * 4 > len(head):
        # ASCII text in UTF-16 without a byte-order mark is valid UTF-8 with a NUL every other byte.
        # (A stray NUL or two is reported where it is, as a control character.)
        odd, even = head[1::2].count(0), head[0::2].count(0)
        guess = ("; it looks like UTF-16LE" if odd > 2 * even else
                 "; it looks like UTF-16BE" if even > 2 * odd else "")
        raise SpecSyntaxError([Finding(file, 1, 1, f"file is not UTF-8 text (it holds NUL bytes{guess}); "
                                       "save it as UTF-8")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[: e.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
        raise SpecSyntaxError([Finding(file, line, column, f"file is not UTF-8 text (byte 0x{raw[e.start]:02x} "
                                       "here is not UTF-8); save it as UTF-8")]) from None


# YAML 1.2 has three line breaks (LF, CR, CR LF); libyaml, a YAML 1.1 parser, also breaks lines at
# NEL, LS and PS, which would move every position after one (and end a comment early). They are
# parsed as spaces, and refused inside a value or key: kustomize's go-yaml (YAML 1.1) would break there.
SEPARATORS = re.compile("[\x85\u2028\u2029]")
SEPARATOR_MESSAGE = ("the text holds a raw line separator (U+0085, U+2028 or U+2029), which YAML 1.1 "
                      "readers such as kustomize's take for a line break; remove it (inside double quotes, "
                      "write it as an escape such as \\u2028)")
# An alias can only start where a node starts: after a space, a flow indicator or at a line start.


def _line_column(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character offset, with YAML 1.2's line breaks."""
    before = text[:index]
    line = before.count("\n") + before.count("\r") - before.count("\r\n") + 1
    return line, index - max(before.rfind("\n"), before.rfind("\r"))


def reader_finding(e: yaml.reader.ReaderError, text: str, file: str) -> Finding:
    line, column = _line_column(text, e.position)
    what = f"the control character U+{e.character:04X}" if isinstance(e.character, int) else "a character"
    return Finding(file, line, column, f"the file holds {what}, which YAML does not allow in a document; "
                   "remove it (inside double quotes, write it as an escape)")
