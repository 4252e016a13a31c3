"""Validation is bounded: no input crashes it, makes it quadratic, or keeps it busy for long."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orch.dockerfile import Validation, bounded, validate, worker_pool
from orch.dockerfile.nesting import MAX_NESTING
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
    seconds, v = timed(CONTINUED)
    assert seconds < 0.5, seconds
    [finding] = v.findings
    assert (finding.line, finding.severity.value) == (1, "error") and not v.ok
    assert f"has {len(CONTINUED):,} characters, more than the limit of 262,144" in finding.message
    room = 256 * 1024 - len(BASE)
    at_the_limit = BASE + "#" * 99 + "\n" + ("#" * 99 + "\n") * (room // 100 - 1) + "#" * (room % 100)
    assert len(at_the_limit) == 256 * 1024 and validate(at_the_limit).ok


def timed(text: str) -> tuple[float, Validation]:
    validate(BASE)  # a worker is running: its start is not what is measured
    started = time.monotonic()
    v = validate(text)
    return time.monotonic() - started, v


def growth(make: Callable[[int], str], n: int) -> float:
    """How much longer a text 4 times as long takes than one of `n` (the least of five each,
    taken in turns, so a busy stretch of the machine slows both alike): linear is about 4,
    quadratic 16."""
    small, large = make(n), make(4 * n)
    times: dict[str, list[float]] = {"small": [], "large": []}
    for _ in range(5):
        times["small"].append(timed(small)[0])
        times["large"].append(timed(large)[0])
    return min(times["large"]) / max(min(times["small"]), 1e-3)


def test_json_nested_deeper_than_python_recurses() -> None:
    # Another line's failure makes the span walk decide whether a RUN is JSON (RecursionError).
    for depth in (1_000, 12_000):
        [finding] = validate(BASE + "RUN " + "[" * depth + "\nENV X\n").findings
        assert (finding.line, finding.instruction) == (3, "ENV")


@pytest.mark.parametrize("depth", [1_600, 5_000])
def test_deep_nesting_is_refused_at_once(depth: int) -> None:
    seconds, v = timed(BASE + "RUN echo " + "${a:-" * depth + "x" + "}" * depth + "\n")
    [finding] = errors(v)
    assert seconds < 1
    assert (finding.line, finding.instruction) == (2, "RUN")
    assert str(depth) in finding.message and str(MAX_NESTING) in finding.fix


def test_nesting_up_to_the_limit_is_parsed() -> None:
    depth = MAX_NESTING
    assert validate(BASE + "RUN echo " + "${a:-" * depth + "x" + "}" * depth + "\n").ok


def test_long_continued_instructions_take_linear_time() -> None:
    assert growth(continued, 6_000) < 8  # 7.6 s before for 24,000 lines: quadratic
    v = validate(CONTINUED)
    assert v.ok
    [_, run] = v.instructions
    assert (run.line, run.end_line) == (2, 24_003)
    assert run.args == ("pip install " + "    package-name-0123 " * 24_000 + "    last",)


def test_large_heredocs_take_linear_time() -> None:
    assert growth(heredoc, 5_000) < 8  # 20 s before for 20,000 lines: quadratic
    [_, run, env] = validate(HEREDOC).instructions
    assert run.heredocs == (("EOF", HEREDOC_BODY),)
    assert (run.line, run.end_line, env.line) == (2, 20_003, 20_004)


def test_an_unterminated_heredoc_at_the_end_of_a_large_file_is_found_fast() -> None:
    seconds, v = timed(BASE + "RUN true\nRUN <<EOF\n" + "\n" * 250_000)
    assert seconds < 2.5, seconds
    [finding] = v.findings
    assert (finding.line, finding.instruction) == (3, "RUN") and "unterminated heredoc" in finding.message


def test_a_parse_that_runs_out_of_time_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounded, "TIME_LIMIT", 0.3)
    seconds, v = timed(LONG_WORD)
    assert seconds < 1.5, seconds
    [finding] = v.findings
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
