"""Corpus tests: files of valid dtabs with their canonical form, invalid ones with the offset."""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import pytest

from shared import Dtab, DtabParseError

CORPUS = FsPath(__file__).parent / "corpus"


def _jsonl(name: str) -> list[dict[str, object]]:
    lines = (CORPUS / name).read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines if line.strip()]


VALID_FILES = sorted((CORPUS / "valid").glob("*.dtab"))
VALID_LINES = _jsonl("valid.jsonl")
INVALID_LINES = _jsonl("invalid.jsonl")


def test_corpus_is_not_empty() -> None:
    assert len(VALID_FILES) >= 4
    assert len(VALID_LINES) >= 30
    assert len(INVALID_LINES) >= 30


@pytest.mark.parametrize("dtab_file", VALID_FILES, ids=lambda p: p.stem)
def test_valid_file_parses_to_its_canonical_form(dtab_file: FsPath) -> None:
    text = dtab_file.read_text(encoding="utf-8")
    expected = dtab_file.with_suffix(".show").read_text(encoding="utf-8")
    dtab = Dtab.read(text)
    assert dtab.show() == expected
    # The canonical form is a fixpoint and denotes the same dtab.
    assert Dtab.read(expected) == dtab
    assert Dtab.read(dtab.show()).show() == expected


@pytest.mark.parametrize("case", VALID_LINES, ids=lambda c: repr(c["text"])[:40])
def test_valid_line(case: dict[str, str]) -> None:
    dtab = Dtab.read(case["text"])
    assert dtab.show() == case["show"]
    # Re-reading the canonical form reaches a fixpoint. (Not always at once: Finagle prints
    # 1.001 as "1.00*", which reads back as the default weight and then prints as nothing.)
    again = Dtab.read(case["show"]).show()
    assert Dtab.read(again).show() == again


@pytest.mark.parametrize("case", INVALID_LINES, ids=lambda c: repr(c["text"])[:40])
def test_invalid_line_reports_offset(case: dict[str, object]) -> None:
    text = case["text"]
    assert isinstance(text, str)
    with pytest.raises(DtabParseError) as info:
        Dtab.read(text)
    err = info.value
    assert err.offset == case["offset"], err.render()
    assert err.expected == case["expected"]
    assert err.text == text
    # The same error from bytes input, at the same offset.
    with pytest.raises(DtabParseError) as binfo:
        Dtab.read(text.encode("utf-8"))
    assert binfo.value.offset == case["offset"]


def test_error_message_and_caret_for_the_issue_example() -> None:
    with pytest.raises(DtabParseError) as info:
        Dtab.read("/svc => /a |")
    err = info.value
    assert str(err) == "simple expected but end of input found at '/svc => /a |[]'"
    lines = err.render().splitlines()
    assert lines[0] == "simple expected but end of input found (line 1, column 13, offset 12)"
    assert lines[1] == "  /svc => /a |"
    assert lines[2] == "  " + " " * 12 + "^"


def test_caret_points_into_the_right_line_of_a_multiline_dtab() -> None:
    text = "/a => /b;\n/c => /d;\n/e => (/f | /g;\n"
    with pytest.raises(DtabParseError) as info:
        Dtab.read(text)
    err = info.value
    assert (err.line, err.column) == (3, 15)
    _, line, caret = err.render().splitlines()
    assert line == "  /e => (/f | /g;"
    assert caret.index("^") == line.index(";")


def test_finagle_message_marks_the_offending_character() -> None:
    with pytest.raises(DtabParseError) as info:
        Dtab.read("invalid-param")
    assert str(info.value) == "'/' expected but 'i' found at '[i]nvalid-param'"
