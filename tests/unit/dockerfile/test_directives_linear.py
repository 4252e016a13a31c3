r"""Directives are read as the parser's pattern reads them (`^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`,
kept here as the reference), in one pass: the pattern's lazy value before trailing spaces took
time in the square of a run of spaces inside a value."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from orch.dockerfile.directives import read_directives

_REFERENCE = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")

_PIECES = st.lists(
    st.sampled_from(
        ["#", " ", "\t", "\n", "\r", "\f", "=", "escape", "syntax", "`", "\\", "a", "1", "é", "x=y"]
    ),
    max_size=12,
).map("".join)


def _reference(text: str) -> tuple[str, str] | None:
    match = _REFERENCE.match(text)
    return None if match is None else (match[1], match[2])


@given(_PIECES)
def test_a_line_is_read_as_the_parsers_pattern_reads_it(text: str) -> None:
    found = read_directives([text])
    expected = _reference(text.lstrip("\t\n\v\f\r \x85\xa0"))
    if expected is None or expected[0].lower() not in ("escape", "syntax"):
        assert found.found == () and found.bad_line is None
    elif expected[0].lower() == "escape" and expected[1] not in ("`", "\\"):
        assert found.found == () and found.bad_line == 1
    else:
        assert [(d.name, d.value) for d in found.found] == [(expected[0].lower(), expected[1])]


def test_the_edges_of_the_value() -> None:
    assert read_directives(["# escape=`   "]).escape == "`"
    assert read_directives(["# syntax=  "]).found[0].value == " "  # whitespace alone: its last
    assert read_directives(["# syntax= a b "]).found[0].value == "a b"
    assert read_directives(["# escape=a" + " " * 200_000 + "b"]).bad_line == 1  # read in one pass
