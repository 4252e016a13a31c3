"""Validation is bounded: no input crashes it, makes it quadratic, or keeps it busy for long.

Nothing here times the validator (a loaded CI machine makes any wall-clock bound flaky; speed
is the benchmarks' business). Instead, the tests count the work a defect would multiply: the
characters BuildKit's parser copies as it grows an instruction (see `parser_copies`), and
whether the parser is reached at all. A parse that never ends is cut off by the validator's
own time limit, which the tests see in its finding.
"""

from __future__ import annotations

from pathlib import Path

import dockerfile
import pytest

from orch.dockerfile import bounded, validate, worker_pool
from orch.dockerfile.directives import read_directives
from orch.dockerfile.lines import go_lstrip, is_comment, split_lines, trim_newline
from orch.dockerfile.nesting import MAX_NESTING
from orch.dockerfile.spans import spans
from orch.dockerfile.validate import Validation, check
from tests.unit.dockerfile.support import BASE, errors


# What took BuildKit's parser (v0.12, in the `dockerfile` package) seconds to minutes.
def continued(lines: int) -> str:
    return BASE + "RUN pip install \\\n" + "    package-name-0123 \\\n" * lines + "    last\n"


def heredoc_body(lines: int) -> str:
    return "echo 'a line of a longish setup script' >> /tmp/log\n" * lines


def heredoc(lines: int) -> str:
    return BASE + "RUN <<EOF\n" + heredoc_body(lines) + "EOF\nENV DONE=1\n"


CONTINUED = continued(24_000)  # 600 KB
HEREDOC_BODY = heredoc_body(20_000)  # 1 MB
HEREDOC = heredoc(20_000)
LONG_WORD = BASE + "RUN echo " + "a" * 50_000 + ("\\\n" + "a" * 50_000) * 4 + "\n"  # 30 s uncapped


@pytest.fixture(autouse=True)
def no_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """These cases are about the parser's time, on texts up to 4x the size anything accepts."""
    monkeypatch.setattr(bounded, "MAX_TEXT", 10 * 2**20)


def test_a_text_over_the_size_limit_gets_one_finding_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "MAX_TEXT", 256 * 1024)
    with monkeypatch.context() as m:
        # At once: no worker is asked, and nothing parses the text.
        m.setattr(worker_pool, "run", refuse("a worker was asked to check a text over the size limit"))
        m.setattr(bounded, "check", refuse("a text over the size limit was checked"))
        v = validate(CONTINUED)
    [finding] = v.findings
    assert (finding.line, finding.severity.value) == (1, "error") and not v.ok
    assert f"has {len(CONTINUED):,} characters, more than the limit of 262,144" in finding.message
    room = 256 * 1024 - len(BASE)
    at_the_limit = BASE + "#" * 99 + "\n" + ("#" * 99 + "\n") * (room // 100 - 1) + "#" * (room % 100)
    assert len(at_the_limit) == 256 * 1024 and validate(at_the_limit).ok


def refuse(what: str) -> object:
    """A stand-in for a function that must not be called: it fails the test if it is."""

    def called(*args: object, **kwargs: object) -> object:
        raise AssertionError(what)

    return called


def checked_here(monkeypatch: pytest.MonkeyPatch, text: str) -> tuple[Validation, list[str]]:
    """Check `text` in this process (what a worker runs: see the last test), and every text
    handed to BuildKit's parser meanwhile."""
    handed: list[str] = []
    parse_string = dockerfile.parse_string

    def spy(text: str) -> object:
        handed.append(text)
        return parse_string(text)

    with monkeypatch.context() as m:
        m.setattr(dockerfile, "parse_string", spy)
        v = check(text)
    return v, handed


def parser_copies(text: str) -> int:
    """The characters BuildKit's parser (v0.12) copies as it builds the instructions of `text`.

    It grows an instruction's line with `line += continuationLine` and a heredoc's body with
    `heredoc.Content += string(line)`; a Go string is immutable, so each += copies the whole
    string built so far. Handed a text line by line, that is quadratic in an instruction's size
    (what made 600 KB of continuations take 7.6 s, a 1 MB heredoc 20 s). The lines it joins are
    found as the parser finds them (the span walk mirrors its loop: comment and blank lines
    skipped, bodies up to their terminator).
    """
    lines = split_lines(text)
    copies = 0
    for span in spans(lines, read_directives(lines).escape):
        grown = len(lines[span.start - 1])
        for raw in lines[span.start : span.logical_end]:  # the continuation lines
            if is_comment(raw) or not go_lstrip(trim_newline(raw)):
                continue
            grown += len(raw)
            copies += grown
        for body in span.bodies:
            grown = 0
            for raw in lines[body.first : body.stop]:
                grown += len(raw) + 1
                copies += grown
    return copies


# The copying allowed per character of the Dockerfile: what the parser does on top of reading
# the text once. Compacted (compact.py), a large instruction reaches the parser as a few lines
# of ~16,000 characters and its heredoc bodies not at all, which copies each character at most
# about 16 times up to the 1 MB texts here (about 5 at 150 KB); handed over line by line, the
# same texts are copied 2,500 to 12,000 times per character, growing with their length.
COPIES_PER_CHARACTER = 32


def copies_per_character(monkeypatch: pytest.MonkeyPatch, text: str) -> tuple[float, Validation]:
    """The parser's copying per character of `text`, and the text's Validation.

    Checked in this process, without the time limit, which is the worker's business (these
    texts are over the size limit, and a loaded machine could take a worker past it).
    """
    v, handed = checked_here(monkeypatch, text)
    assert handed  # the parser was reached: there was something to count
    return sum(parser_copies(t) for t in handed) / len(text), v


@pytest.mark.parametrize(
    ("depth", "closed", "where"),
    [
        # Not JSON to either parser, so shell form: its heredoc swallows the ENV, unterminated.
        (1_000, False, (2, "RUN")),
        (12_000, False, (2, "RUN")),
        # JSON, but not an array of strings: this very RUN fails.
        (1_000, True, (2, "RUN")),
        # Deeper than Go's decoder takes (10,000 levels): shell form, whose one word opens no
        # heredoc, so the RUN parses and the ENV after it fails.
        (12_000, True, (3, "ENV")),
    ],
)
def test_json_nested_deeper_than_python_recurses(depth: int, closed: bool, where: tuple[int, str]) -> None:
    # A RUN line with `<<` in it makes the span walk decide whether the RUN is JSON (which has
    # no heredocs), and Python's decoder raises RecursionError on an array this deep; a line
    # without `<<` is never decoded. Checked here, as a worker would: 12,000 levels keep the
    # parser busy for 0.2 s, which a loaded machine can stretch past the worker's time limit
    # (another finding).
    args = "[" * depth + ('"<<EOF"' + "]" * depth if closed else " <<EOF")
    [finding] = check(BASE + "RUN " + args + "\nENV X\n").findings
    assert (finding.line, finding.instruction) == where


@pytest.mark.parametrize("depth", [1_600, 5_000])
def test_deep_nesting_is_refused_at_once(monkeypatch: pytest.MonkeyPatch, depth: int) -> None:
    # At once: before BuildKit's parser sees it (which takes 10 s on 1,600 levels, minutes on
    # 5,000, and would here run into the time limit, with another finding).
    text = BASE + "RUN echo " + "${a:-" * depth + "x" + "}" * depth + "\n"
    with monkeypatch.context() as m:
        m.setattr(dockerfile, "parse_string", refuse("the parser was handed ${...} nested too deep"))
        assert check(text) == validate(text)
    [finding] = errors(validate(text))
    assert (finding.line, finding.instruction) == (2, "RUN")
    assert str(depth) in finding.message and str(MAX_NESTING) in finding.fix


def test_nesting_up_to_the_limit_is_parsed() -> None:
    depth = MAX_NESTING
    assert validate(BASE + "RUN echo " + "${a:-" * depth + "x" + "}" * depth + "\n").ok


def test_long_continued_instructions_take_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parser's copying stays within a constant per character, at 6,000 lines and at 4 times
    # as many (line by line: 2,900 and 11,500 per character; it took 7.6 s for 24,000 lines).
    for lines in (6_000, 24_000):
        copies, v = copies_per_character(monkeypatch, continued(lines))
        assert copies < COPIES_PER_CHARACTER, (lines, copies)
    assert v.ok  # CONTINUED's
    [_, run] = v.instructions
    assert (run.line, run.end_line) == (2, 24_003)
    assert run.args == ("pip install " + "    package-name-0123 " * 24_000 + "    last",)


def test_large_heredocs_take_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # As above (line by line: 2,500 and 10,000 per character; it took 20 s for 20,000 lines).
    for lines in (5_000, 20_000):
        copies, v = copies_per_character(monkeypatch, heredoc(lines))
        assert copies < COPIES_PER_CHARACTER, (lines, copies)
    [_, run, env] = v.instructions  # HEREDOC's
    assert run.heredocs == (("EOF", HEREDOC_BODY),)
    assert (run.line, run.end_line, env.line) == (2, 20_003, 20_004)


def test_an_unterminated_heredoc_at_the_end_of_a_large_file_is_found_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = BASE + "RUN true\nRUN <<EOF\n" + "\n" * 250_000
    # Fast: one parse, with its copying within the constant per character (the body handed
    # over as written is 250,000 lines: 125,000 copies per character).
    v, handed = checked_here(monkeypatch, text)
    assert len(handed) == 1
    assert parser_copies(handed[0]) < COPIES_PER_CHARACTER * len(text)
    [finding] = v.findings
    assert (finding.line, finding.instruction) == (3, "RUN") and "unterminated heredoc" in finding.message


# A hang guard, not a speed bound: the word takes the parser 30 s uncapped, which would
# also parse it (ok, no finding) rather than report it as too slow.
@pytest.mark.timeout(60)
def test_a_parse_that_runs_out_of_time_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "TIME_LIMIT", 0.3)
    [finding] = validate(LONG_WORD).findings
    assert (finding.line, finding.severity.value) == (2, "error")
    assert "more than 0.3 s" in finding.message and "50,010 characters" in finding.message
    assert validate(BASE + "RUN true\n").ok  # the next validation gets a fresh worker


def test_a_worker_that_dies_is_reported_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    def die(self: worker_pool._Worker, request: dict[str, object], deadline: float) -> None:
        self.proc.kill()
        self.proc.wait()
        raise worker_pool._Dead(sent=True)

    with monkeypatch.context() as m:
        m.setattr(worker_pool._Worker, "exchange", die)
        [finding] = validate(BASE + "RUN true\n").findings
    assert "crashed" in finding.message and "exit code -9" in finding.message
    assert validate(BASE + "RUN true\n").ok


def test_a_bug_in_the_worker_is_raised_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_pool, "run", lambda request, seconds: {"bug": "TypeError: oops"})
    with pytest.raises(RuntimeError, match="TypeError: oops"):
        validate(BASE)


def test_without_worker_processes_it_validates_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot_start(self: worker_pool._Worker) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(worker_pool._POOL, "_idle", [])
    monkeypatch.setattr(worker_pool._Worker, "__init__", cannot_start)
    v = validate(BASE + "RUN true\nEXPOSE 1\n")
    assert [f.instruction for f in v.findings] == ["EXPOSE"]


def test_a_worker_that_cannot_start_means_validating_in_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A machine where the worker can't load its code must not make every Dockerfile invalid.
    broken = tmp_path / "worker.py"
    broken.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr(worker_pool, "_SCRIPT", broken)
    monkeypatch.setattr(worker_pool._POOL, "_idle", [])
    v = validate(BASE + "RUN true\nEXPOSE 1\n")
    assert [f.instruction for f in v.findings] == ["EXPOSE"]


def test_what_the_worker_answers_is_what_checking_here_gives() -> None:
    from orch.dockerfile.validate import check

    for text in (HEREDOC, BASE + "COPY a b\nCMD x\n", "ARG V=1\n" + BASE + "ARG V\n"):
        assert validate(text) == check(text)
