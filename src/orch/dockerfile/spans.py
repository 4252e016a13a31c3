"""Where each instruction begins and ends, found the way BuildKit's parser walks the lines.

The parser reports errors without a position, so this walk is what lets a finding point at
the instruction that failed. It mirrors the parser's loop: comments and blank lines are
skipped, continuation lines are joined, heredoc bodies are consumed up to their terminator.
It also keeps what the parser builds from those lines (the joined line, the heredoc bodies),
so that a large instruction can be handed to the parser in a smaller form (see compact.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from orch.dockerfile.builder_flags import split_command
from orch.dockerfile.lines import BOM, TOKEN_SPACE, go_lstrip, go_strip, is_comment, trim_newline
from orch.dockerfile.shell_words import HEREDOC_MARKER, split_words

_HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})


@dataclass(frozen=True)
class Body:
    """One heredoc's body: lines[first:stop] (0-based); lines[stop] is its terminator, if found."""

    name: str
    first: int
    stop: int


@dataclass(frozen=True)
class Span:
    """One instruction's lines (1-based, inclusive) and its first word in lower case.

    `joined` is the line the parser builds from the instruction's physical lines (continuations
    joined, comments dropped), which ends on line `logical_end`; `continued` is True when the
    file ends while that line is still continued. `markers` are the heredoc marker words, as
    written, and `bodies` their bodies, in order.
    """

    start: int
    end: int
    keyword: str
    unterminated: bool
    logical_end: int = 0
    joined: str = ""
    continued: bool = False
    markers: tuple[str, ...] = ()
    bodies: tuple[Body, ...] = ()


def continuation_pattern(escape: str) -> re.Pattern[str]:
    """The parser's line-continuation regex for this escape character."""
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*\Z|\A{e}[ \t]*\Z")


def spans(lines: list[str], escape: str) -> Iterator[Span]:
    """The instructions of a Dockerfile, in order."""
    continuation = continuation_pattern(escape)
    i, n = 0, len(lines)
    while i < n:
        text = go_lstrip(trim_newline(lines[i].removeprefix(BOM) if i == 0 else lines[i]))
        i += 1
        start = i
        first, done = _trim(continuation, "" if text.startswith("#") else text)
        if done and not first:
            continue
        # Joined once at the end: appending to a string piece by piece is what makes the Go
        # parser quadratic on long continued instructions.
        parts = [first]
        while not done and i < n:
            raw = lines[i]
            i += 1
            if is_comment(raw) or not go_lstrip(trim_newline(raw)):
                continue
            more, done = _trim(continuation, trim_newline(raw))
            parts.append(more)
        line = "".join(parts)
        logical_end = i
        keyword = TOKEN_SPACE.split(go_strip(line), maxsplit=1)[0].lower()
        unterminated = False
        markers = _heredocs(line)
        bodies: list[Body] = []
        for name, chomp, _word in markers:
            first_body = i
            i, found = _skip_body(lines, i, name, chomp)
            bodies.append(Body(name, first_body, i - 1 if found else i))
            if not found:
                unterminated = True
                break
        yield Span(
            start,
            i,
            keyword,
            unterminated,
            logical_end=logical_end,
            joined=line,
            continued=not done,
            markers=tuple(word for _name, _chomp, word in markers),
            bodies=tuple(bodies),
        )


def _trim(continuation: re.Pattern[str], line: str) -> tuple[str, bool]:
    """The line without its continuation escape, and whether the instruction ends here."""
    match = continuation.search(line)
    if match is None:
        return line, True
    return line[: match.start()] + (match[1] or ""), False


def _heredocs(line: str) -> list[tuple[str, bool, str]]:
    """(name, strip leading tabs, marker word) for each heredoc the instruction opens."""
    if "<<" not in line:
        return []
    keyword, rest = split_command(line)
    if keyword.lower() == "onbuild":
        keyword, rest = split_command(rest)
    if keyword.lower() not in _HEREDOC_KEYWORDS or _is_json(rest):
        return []
    found = []
    for word in split_words(line, raw=True) or []:
        match = HEREDOC_MARKER.match(word)
        names = split_words(match[3], raw=False) if match and match[3] else None
        if match and names is not None and len(names) == 1:
            found.append((names[0], match[2] == "-", word))
    return found


def _is_json(rest: str) -> bool:
    """Whether the arguments (after the flags) are a JSON array (which has no heredocs)."""
    if not rest.startswith("["):
        return False
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except (ValueError, RecursionError):
        # Python's decoder recurses once per nesting level. An array nested that deep is, to
        # the parser, either invalid JSON (so shell form, as here) or not an array of strings
        # (so this very instruction fails, whatever follows it).
        return False
    return isinstance(value, list)


def _skip_body(lines: list[str], i: int, name: str, chomp: bool) -> tuple[int, bool]:
    """Consume a heredoc body; the next line index and whether the terminator was found."""
    while i < len(lines):
        candidate = trim_newline(lines[i])
        i += 1
        if (candidate.lstrip("\t") if chomp else candidate) == name:
            return i, True
    return i, False
