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


# A Dockerfile of real shape: its FROM and one RUN, whose heredoc has 2,000 lines.
SCRIPT = BASE + "RUN <<EOF\n" + "echo 'a line of a setup script' >> /tmp/log\n" * 2_000 + "EOF\n"


def test_a_heredoc_s_lines_are_no_instructions() -> None:
    # Found by a tester: out of time on a loaded machine, this file "has 2,004 instructions".
    finding = stopped(SCRIPT)
    assert (finding.line, finding.instruction, finding.severity.value) == (1, "", "error")
    assert finding.message == (
        "The Dockerfile was not checked because parsing it took more than 1.5 s, though it has "
        "only 2 instructions (2,003 lines), which BuildKit's parser reads in a fraction of that: "
        "the server was likely busy."
    )
    assert finding.fix.startswith("Validate it again") and "fewer instructions" not in finding.fix


@pytest.mark.parametrize(
    "run",
    [
        "RUN <<-'EOF'\n" + "\techo a\n" * 2_000 + "\tEOF\n",  # quoted, tabs stripped
        "RUN apt-get update && \\\n    cat <<EOF > /etc/x\n" + "a=1\n" * 2_000 + "EOF\n",  # continued
        "COPY <<A <<B /etc/\n" + "a\n" * 1_000 + "A\n" + "b\n" * 1_000 + "B\n",  # two bodies
    ],
)
def test_every_heredoc_body_is_left_out(run: str) -> None:
    assert "only 3 instructions" in stopped(BASE + run + "ENV DONE=1\n").message


def test_many_instructions_after_a_heredoc_are_still_counted() -> None:
    assert "it has 30,002 instructions, and" in stopped(SCRIPT + "ENV A=1\n" * 30_000).message


def test_a_validation_of_a_heredoc_out_of_time_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker runs out of time (as it can on a loaded machine) without waiting for it.
    monkeypatch.setattr(worker_pool, "run", lambda request, seconds: OUT_OF_TIME)
    [finding] = validate(SCRIPT).findings
    assert finding.line == 1 and "only 2 instructions (2,003 lines)" in finding.message


def test_a_short_file_is_said_to_be_short() -> None:
    assert "only 1 instruction (1 line)," in stopped(BASE).message
    assert "only 3 instructions (4 lines)," in stopped(BASE + "RUN a \\\n  b\nCMD x").message


def test_the_longest_line_pointed_at_is_no_heredoc_s() -> None:
    # The parser reads no word of a body: the long word it is slow on is the second RUN's.
    text = BASE + "RUN <<EOF\n" + "b" * 100_000 + "\nEOF\nRUN echo " + "a" * 30_000 + "\n"
    finding = stopped(text)
    assert finding.line == 5 and "(30,009 characters)" in finding.message
