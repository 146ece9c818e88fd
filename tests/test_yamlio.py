"""The one emitter and the loader: round trips, and the rules that keep hostile YAML harmless."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from renderer import yamlio
from renderer.yamlio import Position, SpecSyntaxError, dump, load_document

TRICKY = st.sampled_from(["yes", "no", "on", "off", "y", "n", "~", "null", "true", "1", "1.0", "0x1f", "0o7",
                          "1:20", "2001-12-14", "-", "- a", ": x", "a: b", "#c", "a #c", "---", "...", "!!str",
                          "&a", "*a", "@x", "`x", "%x", "'", '"', "{}", "[]", "", " ", "a ", " a", "<<", "=",
                          ".inf", ".nan", "\t", "\n", "a\nb", "\u2028", "\x85", "\ufeff", "\U0001F600", "é"])
SCALARS = st.none() | st.booleans() | st.integers() | st.text() | TRICKY
DATA = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text() | TRICKY, inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text() | TRICKY, DATA, max_size=6))
def test_emitter_round_trips_for_yaml_1_1_and_1_2_readers(data: dict[str, Any]) -> None:
    text = dump(data)
    assert text == "" or text.endswith("\n")
    assert yaml.safe_load(text) in (data, None if not data else data)  # YAML 1.1 (PyYAML, like go-yaml v2)
    assert YAML(typ="safe", pure=True).load(text) in (data, None if not data else data)  # YAML 1.2


def test_emitter_style_is_readable() -> None:
    text = dump({"metadata": {"name": "x", "annotations": {"a": '{"k":"v"}'}}, "list": ["base", "overlays/a"],
                 "@type": "type.googleapis.com/x", "empty": {}, "none": [], "n": 3, "b": False})
    assert text == (
        "metadata:\n"
        "  name: x\n"
        "  annotations:\n"
        "    a: '{\"k\":\"v\"}'\n"
        "list:\n"
        "- base\n"
        "- overlays/a\n"
        "'@type': type.googleapis.com/x\n"
        "empty: {}\n"
        "none: []\n"
        "'n': 3\n"
        "b: false\n")


def test_a_long_string_is_never_folded() -> None:
    value = "A" * 100_000
    text = dump({"k": value})
    assert text == f"k: {value}\n"


@pytest.mark.parametrize("text,expected", [
    ("a: on\nb: no\nc: 012\n", {"a": "on", "b": "no", "c": 12}),  # YAML 1.2 core: on/no are strings
    ("a: 0o17\nb: 0x1F\nc: .inf\n", {"a": 15, "b": 31, "c": float("inf")}),
    ("a: !!str 12\n", {"a": "12"}),
    ("a: &x [1]\nb: *x\n", {"a": [1], "b": [1]}),
])
def test_loader_scalars_and_aliases(text: str, expected: dict[str, Any]) -> None:
    assert load_document(text, "f.yaml").data == expected


@pytest.mark.parametrize("text,message", [
    ("a: !!binary aGVsbG8=\n", "f.yaml:1:4: YAML tag 'tag:yaml.org,2002:binary' is not allowed"),
    ("a: !custom x\n", "f.yaml:1:4: YAML tag '!custom' is not allowed"),
    ("? [a, b]\n: c\n", "f.yaml:1:3: key 'a collection' is not a string"),
    ("a: !!int x\n", "f.yaml:1:4: 'x' is not a valid int"),
    ("\x00", "f.yaml:1:1: the file holds the control character U+0000"),
    ('a: "x\\x7fy"\n', "f.yaml:1:4: the value holds the control character U+007F"),
    ('a: "\\ufeff"\n', "f.yaml:1:4: the value holds the control character U+FEFF"),
])
def test_loader_refusals(text: str, message: str) -> None:
    with pytest.raises(SpecSyntaxError) as e:
        load_document(text, "f.yaml")
    assert str(e.value).startswith(message)


def test_positions_are_kept_for_keys_and_values() -> None:
    doc = load_document("top:\n  - name: x\n    value: [1, 2]\n", "f.yaml")
    name_key = doc.position(("top", 0, "name"), key=True)
    name_value = doc.position(("top", 0, "name"))
    assert (name_key.line, name_key.column, name_value.line, name_value.column) == (2, 5, 2, 11)
    assert (doc.position(("top", 0, "value"), key=True).line, doc.position(("top", 0, "value"), key=True).column) == (3, 5)
    assert (doc.position(("top", 0, "value", 1)).line, doc.position(("top", 0, "value", 1)).column) == (3, 16)
    assert (doc.position(("top", 0, "missing")).line, doc.position(("top", 0, "missing")).column) == (2, 5)


def test_the_refused_characters_are_exactly_those_outside_yamls_printable_set() -> None:
    # YAML 1.2 section 5.1: c-printable, less the BOM, which go-yaml refuses inside text.
    printable = re.compile("[\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
    disagree = [hex(c) for c in range(0x110000)
                if bool(yamlio.load._NOT_PRINTABLE.match(chr(c))) == bool(printable.match(chr(c)))]
    assert disagree == []


@pytest.mark.parametrize("value", ["_", "+_", "-_", "1_000", "1.2.3", "._", "_1e5"])
def test_numberish_strings_are_quoted_so_every_reader_keeps_them_strings(value: str) -> None:
    # Found by the round-trip property: ruamel.yaml (YAML 1.2) resolves a plain "+_" as an integer.
    text = dump({value: value})
    assert YAML(typ="safe", pure=True).load(text) == {value: value}
    assert yaml.safe_load(text) == {value: value}


def test_a_lone_dot_stays_plain() -> None:
    assert dump({"path": "."}) == "path: .\n"  # Argo CD's usual spelling; no reader takes it for a number


# ------------------------------------------------------------------ positions and encodings

def _refusal(text: str | bytes) -> str:
    with pytest.raises(SpecSyntaxError) as e:
        load_document(text, "f.yaml")
    return str(e.value)


def test_a_raw_control_character_is_reported_at_its_line_and_column() -> None:
    text = "a: 1\n" * 11 + "key: ab\x01c\n"
    assert _refusal(text).startswith("f.yaml:12:8: the file holds the control character U+0001")
    assert "position" not in _refusal(text)


def test_positions_after_crlf_and_cr_line_breaks() -> None:
    assert _refusal("a: 1\r\nb: 2\r\nc: \x02\n").startswith("f.yaml:3:4:")
    assert _refusal("a: 1\rb: \x02\n").startswith("f.yaml:2:4:")


@pytest.mark.parametrize("encoding,bom,named", [
    ("utf-16-le", True, "UTF-16LE (it starts with the UTF-16LE byte-order mark)"),
    ("utf-16-be", True, "UTF-16BE (it starts with the UTF-16BE byte-order mark)"),
    ("utf-32-le", True, "UTF-32LE (it starts with the UTF-32LE byte-order mark)"),
    ("utf-32-be", True, "UTF-32BE (it starts with the UTF-32BE byte-order mark)"),
    ("utf-16-le", False, "not UTF-8 text (it holds NUL bytes; it looks like UTF-16LE)"),
    ("utf-16-be", False, "not UTF-8 text (it holds NUL bytes; it looks like UTF-16BE)"),
])
def test_a_file_in_another_encoding_says_it_is_not_utf8(encoding: str, bom: bool, named: str) -> None:
    raw = (("\ufeff" if bom else "") + "apiVersion: wasm-gitops/v1\nkind: FilterSet\n").encode(encoding)
    expected = f"file is {named}, not UTF-8" if bom else f"file is {named}"
    assert _refusal(raw) == f"f.yaml:1:1: {expected}; save it as UTF-8"


def test_latin1_says_where_it_stops_being_utf8() -> None:
    assert _refusal("a: 1\nb: caf\u00e9\n".encode("latin-1")) == (
        "f.yaml:2:7: file is not UTF-8 text (byte 0xe9 here is not UTF-8); save it as UTF-8")


def test_a_utf8_byte_order_mark_is_fine() -> None:
    assert load_document("\ufeffa: 1\n".encode(), "f.yaml").data == {"a": 1}


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_line_separator_in_a_comment_is_no_line_break(separator: str) -> None:
    text = f"a: 1  # a comment{separator}b: 2\nc: [1\n"
    # YAML 1.2: the comment runs to the end of line 1, so "b: 2" is comment text, and the error in the
    # unclosed flow sequence is on line 3, not 4.
    assert _refusal(text).startswith("f.yaml:3:")
    doc = load_document(f"a: 1  # {separator} still a comment\nc: 3\n", "f.yaml")
    assert doc.data == {"a": 1, "c": 3}
    assert doc.position(("c",)) == Position(2, 4)


def test_a_raw_line_separator_inside_a_value_is_refused() -> None:
    assert _refusal("a: 1\nb: 'x\u2028y'\n").startswith("f.yaml:2:4: the text holds a raw line separator")
    # Written as an escape it is a value like any other (the emitter escapes it again).
    assert load_document('b: "x\\u2028y"\n', "f.yaml").data == {"b": "x\u2028y"}


def test_an_error_reached_through_an_alias_is_reported_where_the_alias_is() -> None:
    text = "a: &bad !!int zz\nlist:\n  - ok\n  - *bad\n"
    lines = _refusal(text).splitlines()
    assert lines[0] == "f.yaml:1:4: 'zz' is not a valid int; fix the value or drop the tag"
    assert lines[1] == ("f.yaml:4:5: 'zz' is not a valid int; fix the value or drop the tag (through an "
                        "alias: the value is written at its anchor, line 1)")


def test_positions_of_paths_through_an_alias() -> None:
    doc = load_document("base: &b {x: 1, y: [2, 3]}\nuse:\n  k: *b\nother: {m: *b}\n", "f.yaml")
    assert doc.position(("use", "k", "y", 1)) == Position(3, 6)
    assert doc.position(("other", "m", "x")) == Position(4, 12)
    assert doc.position(("base", "y", 1)) == Position(1, 24)  # the anchor itself: its own position
    finding = doc.finding(("use", "k", "x"), "wrong")
    assert (finding.line, finding.column) == (3, 6)
    assert finding.message == "wrong (through an alias: the value is written at its anchor, line 1)"


def test_a_stray_nul_byte_is_reported_where_it_is() -> None:
    assert _refusal(b"a: 1\nb: x\x00y\n").startswith("f.yaml:2:5: the file holds the control character U+0000")
