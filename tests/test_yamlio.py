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
from renderer.yamlio import SpecSyntaxError, dump, load_document

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
    ("\x00", "f.yaml:1:1: YAML syntax error"),
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
                if bool(yamlio._NOT_PRINTABLE.match(chr(c))) == bool(printable.match(chr(c)))]
    assert disagree == []


@pytest.mark.parametrize("value", ["_", "+_", "-_", "1_000", "1.2.3", "._", "_1e5"])
def test_numberish_strings_are_quoted_so_every_reader_keeps_them_strings(value: str) -> None:
    # Found by the round-trip property: ruamel.yaml (YAML 1.2) resolves a plain "+_" as an integer.
    text = dump({value: value})
    assert YAML(typ="safe", pure=True).load(text) == {value: value}
    assert yaml.safe_load(text) == {value: value}


def test_a_lone_dot_stays_plain() -> None:
    assert dump({"path": "."}) == "path: .\n"  # Argo CD's usual spelling; no reader takes it for a number
