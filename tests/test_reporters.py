"""The reporters table: formats chosen by name per result kind, one JSON shape, one GitHub escape."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import pytest

from renderer import reporters
from renderer.errors import Finding
from renderer.output import Changes
from renderer.reporters.base import escape_data, escape_property
from renderer.review import Review
from renderer.wasm import inspect_wasm

PROBLEMS = (Finding("filters.yaml", 3, 7, "unknown key 'wasmm'; did you mean 'wasm'?", path="$.filters[0]"),
            Finding("filters.yaml", 9, 1, "service my-app loads no filter", "warning"))


@pytest.fixture
def restore_table() -> Iterator[None]:
    before = reporters.formats("findings")  # loads the kind's own reporters first
    yield
    for name in set(reporters.formats("findings")) - set(before):
        del reporters.REPORTERS["findings"][name]


def test_a_new_format_is_one_registered_function(restore_table: None) -> None:
    assert "tap" not in reporters.formats("findings")

    @reporters.reporter("findings", "tap")
    def tap(items: Sequence[Finding], where: reporters.Locator = reporters.AS_GIVEN) -> str:
        lines = [f"not ok {n} - {where.finding_file(f)}:{f.line}:{f.column} {f.message}"
                 for n, f in enumerate(items, 1)]
        return "".join(f"{line}\n" for line in [f"1..{len(items)}", *lines])

    assert reporters.formats("findings") == ("text", "json", "github", "tap")
    assert reporters.report("findings", "tap", PROBLEMS) == (
        "1..2\n"
        "not ok 1 - filters.yaml:3:7 unknown key 'wasmm'; did you mean 'wasm'?\n"
        "not ok 2 - filters.yaml:9:1 service my-app loads no filter\n")
    # The formats a kind had before are untouched by the new one.
    assert reporters.report("findings", "text", PROBLEMS[:1]) == (
        "filters.yaml:3:7: unknown key 'wasmm'; did you mean 'wasm'?\n")


def test_a_format_the_kind_lacks_is_refused_with_the_ones_it_has() -> None:
    with pytest.raises(ValueError, match=r"unknown report format 'sarif' for verify; expected text or json"):
        reporters.report("verify", "sarif", [])


def _json_outputs() -> dict[str, str]:
    empty = Review((), (), (), (), ())
    return {
        "findings": reporters.report("findings", "json", PROBLEMS),
        "problems": reporters.report("problems", "json", PROBLEMS, reporters.AS_GIVEN, "check"),
        "drift": reporters.report("drift", "json", Changes(added=["base/a.yaml"])),
        "review": reporters.report("review", "json", empty),
        "verify": reporters.report("verify", "json", []),
        "module": reporters.report("module", "json", inspect_wasm(b"\0asm\1\0\0\0"), "empty.wasm"),
    }


def test_every_json_output_is_one_document_with_its_schema_version_and_one_final_newline() -> None:
    for kind, text in _json_outputs().items():
        assert text.endswith("}\n") and not text.endswith("\n\n"), kind
        document = json.loads(text)
        assert document["schemaVersion"] == reporters.SCHEMA_VERSION == 1, kind
        assert text == json.dumps(document, indent=2, sort_keys=True) + "\n", kind


def test_the_problems_document_of_check_says_the_output_is_not_clean() -> None:
    check = json.loads(reporters.report("problems", "json", PROBLEMS, reporters.AS_GIVEN, "check"))
    validate = json.loads(reporters.report("problems", "json", PROBLEMS, reporters.AS_GIVEN, "validate"))
    assert check["clean"] is False and check["valid"] is False
    assert "clean" not in validate and validate["problems"] == check["problems"]


def test_one_github_escape_data_and_properties() -> None:
    assert escape_data("50%\r\nof a: b, c") == "50%25%0D%0Aof a: b, c"
    assert escape_property("50%\r\nof a: b, c") == "50%25%0D%0Aof a%3A b%2C c"
    weird = Finding("dir,with: colon/filters.yaml", 1, 2, "two\nlines")
    assert reporters.report("findings", "github", [weird]) == (
        "::error file=dir%2Cwith%3A colon/filters.yaml,line=1,col=2::two%0Alines\n")


def test_every_format_the_command_line_offers_is_in_the_table() -> None:
    from renderer import cli

    assert set(cli.FORMATS) == set(reporters.formats("findings")) == set(reporters.formats("drift"))
    assert set(cli.FORMATS) <= set(reporters.formats("problems"))
    # unified is the files' own diff, not a view of the review.
    assert set(cli.DIFF_FORMATS) - {"unified"} == set(reporters.formats("review"))
    # An invalid spec is reported in each of diff's formats (unified falls back to text).
    assert set(cli.DIFF_FORMATS) - {"unified"} == set(reporters.formats("problems"))
    for command, kind in (("verify", "verify"), ("inspect", "inspect")):
        offered = next(p for p in cli.main.commands[command].params if p.name == "fmt")
        assert set(offered.type.choices) == set(reporters.formats(kind)), command  # type: ignore[attr-defined]
