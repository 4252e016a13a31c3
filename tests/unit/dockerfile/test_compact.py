"""The compacted text handed to BuildKit's parser parses to exactly what the user's text does."""

from __future__ import annotations

from unittest import mock

from hypothesis import HealthCheck, example, given, settings

from orch.dockerfile import compact
from orch.dockerfile.validate import Validation, check
from tests.unit.dockerfile.strategies import dockerfile_texts


def compacted(text: str) -> Validation:
    """Validation with every instruction compacted and cut into pieces of a few characters.

    In this process (`check`): a worker would not see the patches.
    """
    with mock.patch.object(compact, "COMPACT_LINES", 0), mock.patch.object(compact, "_PIECE", 6):
        return check(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dockerfile_texts())
@example(
    "FROM e2bdev/code-interpreter:latest\nRUN a \\\n  # c\n\n  b\\\n  c\nRUN <<A <<-B cat\n1\nA\n\t2\n\tB\n"
)
@example("RUN <<EOF\nnever ends\n")
@example("FROM e2bdev/code-interpreter:latest\nRUN echo a b c d e f g \\")
@example("# escape=`\nFROM e2bdev/code-interpreter:latest\nRUN a `\n b``\nENV X\n")
@example("FROM e2bdev/code-interpreter:latest\nONBUILD RUN <<X\nx\nX\nRUN --mount=type=cache,target=/é y\n")
def test_compacted_text_parses_the_same(text: str) -> None:
    assert compacted(text) == check(text)


def test_small_files_are_handed_over_as_written() -> None:
    text = "FROM e2bdev/code-interpreter:latest\nRUN a \\\n  b\n"
    from orch.dockerfile.lines import split_lines
    from orch.dockerfile.spans import spans

    lines = split_lines(text)
    plan = compact.compact(text, lines, list(spans(lines, "\\")), "\\", {})
    assert plan.text == text and plan.restore == frozenset()
