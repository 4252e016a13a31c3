"""A validation that runs out of time says what made the parser slow: tens of thousands of
instructions, or very long words (docs/environments.md, "Validation"; found by a tester: 30,000
`ENV A=1` lines were said to be slow on their 35-character FROM line, with the fix to split
long words)."""

from __future__ import annotations

import pytest

from orch.dockerfile import bounded, validate, worker_pool
from orch.dockerfile.findings import Finding
from tests.unit.dockerfile.support import BASE

OUT_OF_TIME = worker_pool.Stopped(timed_out=True, exit_code=None)
MANY_ENV = BASE + "ENV A=1\n" * 30_000  # 240,036 characters, under the size limit


def stopped(text: str) -> Finding:
    return bounded._stopped(OUT_OF_TIME, text)


def test_many_short_instructions_are_said_to_be_too_many() -> None:
    finding = stopped(MANY_ENV)
    assert (finding.line, finding.instruction, finding.severity.value) == (1, "", "error")
    assert finding.message == (
        "The Dockerfile was not checked because parsing it took more than 1.5 s: it has 30,001 "
        "instructions, and BuildKit's parser takes a while on each."
    )
    assert "ENV A=1 B=2" in finding.fix and "&&" in finding.fix and "long words" not in finding.fix


def test_comments_blank_lines_and_continuations_are_no_instructions() -> None:
    text = BASE + "# a comment\n\n   \nRUN echo a \\\n    b \\\n\n    c\n" * 10_000
    assert "it has 20,001 instructions" in stopped(text).message


@pytest.mark.parametrize("escape", ["\\", "`"])
def test_a_long_word_is_still_pointed_at(escape: str) -> None:
    # One word of 200,000 characters over 200 continued lines, after many short instructions.
    directive = "# escape=`\n" if escape == "`" else ""
    text = directive + BASE + "ENV A=1\n" * 5_000 + "RUN echo " + ("a" * 1_000 + escape + "\n") * 200 + "b\n"
    finding = stopped(text)
    assert finding.line == len(directive.splitlines()) + 5_002  # the longest line, the RUN's first
    assert "slow on very long words" in finding.message and "(1,010 characters)" in finding.message
    assert "Split long words" in finding.fix


def test_a_validation_of_many_instructions_out_of_time_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "TIME_LIMIT", 0.05)  # the parse takes ten times that
    [finding] = validate(MANY_ENV).findings
    assert finding.line == 1 and "it has 30,001 instructions" in finding.message
