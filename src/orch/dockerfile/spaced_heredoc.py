"""A heredoc written with a space after << (`RUN cat << 'EOF'`), which BuildKit does not see.

The shell would accept the space, but BuildKit only takes a word that starts with << for a
heredoc marker, so the body's lines are read as instructions: one "not a Dockerfile
instruction" error per line, none of them at the line that is wrong. Such a RUN, followed
later by a line that is exactly the delimiter, is reported once, at the RUN, instead.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from orch.dockerfile.findings import Finding, Severity, error
from orch.dockerfile.lines import trim_newline
from orch.dockerfile.shell_words import split_words
from orch.dockerfile.spans import Span

_KEYWORDS = frozenset({"run", "copy", "add"})


@dataclass(frozen=True)
class SpacedHeredoc:
    """The instruction with the spaced marker, and the lines (1-based) its body was meant to take."""

    line: int
    keyword: str
    operator: str
    delimiter: str
    first: int
    last: int


def spaced_heredocs(lines: Sequence[str], walked: Sequence[Span]) -> list[SpacedHeredoc]:
    """Each instruction whose `<< WORD` is followed, further down, by a line that is exactly WORD."""
    found: list[SpacedHeredoc] = []
    index: _Terminators | None = None
    after = 0  # lines before this belong to an earlier would-be body
    for span in walked:
        if span.start <= after or span.keyword not in _KEYWORDS or span.markers or "<<" not in span.joined:
            continue
        words = split_words(span.joined, raw=True) or []
        for operator, word in itertools.pairwise(words):
            if operator not in ("<<", "<<-"):
                continue
            names = split_words(word, raw=False)
            if not names or len(names) != 1:
                break
            index = index or _Terminators(lines)
            last = index.first_after(names[0], span.end, tabs=operator == "<<-")
            if last is not None:
                found.append(
                    SpacedHeredoc(span.start, span.keyword.upper(), operator, word, span.end + 1, last)
                )
                after = last
            break
    return found


def apply(spaced: Sequence[SpacedHeredoc], findings: list[Finding]) -> list[Finding]:
    """The findings with each would-be body's errors replaced by one finding at its instruction."""
    for s in spaced:
        inside = [f for f in findings if s.first <= f.line <= s.last]
        if not any(f.severity is Severity.ERROR for f in inside):
            continue  # the lines happen to read as instructions: nothing to explain
        findings = [f for f in findings if not s.first <= f.line <= s.last]
        findings.append(
            error(
                s.line,
                s.keyword,
                f"{s.operator} {s.delimiter} is not a heredoc to BuildKit because of the space after "
                f"{s.operator}, so lines {s.first}-{s.last} are read as instructions.",
                f"Remove the space: write {s.operator}{s.delimiter}.",
            )
        )
    return findings


class _Terminators:
    """Where each line's text occurs (with and without leading tabs), to find a delimiter fast."""

    def __init__(self, lines: Sequence[str]) -> None:
        self._exact: dict[str, list[int]] = {}
        self._tabless: dict[str, list[int]] = {}
        for number, line in enumerate(lines, start=1):
            text = trim_newline(line)
            self._exact.setdefault(text, []).append(number)
            self._tabless.setdefault(text.lstrip("\t"), []).append(number)

    def first_after(self, name: str, line: int, *, tabs: bool) -> int | None:
        numbers = (self._tabless if tabs else self._exact).get(name, [])
        at = bisect.bisect_right(numbers, line)
        return numbers[at] if at < len(numbers) else None
