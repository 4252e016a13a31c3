"""Where each instruction begins and ends, found the way BuildKit's parser walks the lines.

The parser reports errors without a position, so this walk is what lets a finding point at
the instruction that failed. It mirrors the parser's loop: comments and blank lines are
skipped, continuation lines are joined, heredoc bodies are consumed up to their terminator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from orch.dockerfile.lines import BOM, TOKEN_SPACE, go_lstrip, is_comment, trim_newline
from orch.dockerfile.shell_words import HEREDOC_MARKER, split_words

_HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})


@dataclass(frozen=True)
class Span:
    """One instruction's lines (1-based, inclusive) and its first word in lower case."""

    start: int
    end: int
    keyword: str
    unterminated: bool


def spans(lines: list[str], escape: str) -> Iterator[Span]:
    """The instructions of a Dockerfile, in order."""
    e = re.escape(escape)
    continuation = re.compile(rf"([^{e}]){e}[ \t]*\Z|\A{e}[ \t]*\Z")
    i, n = 0, len(lines)
    while i < n:
        text = go_lstrip(trim_newline(lines[i].removeprefix(BOM) if i == 0 else lines[i]))
        i += 1
        start = i
        line, done = _trim(continuation, "" if text.startswith("#") else text)
        if done and not line:
            continue
        while not done and i < n:
            raw = lines[i]
            i += 1
            if is_comment(raw) or not go_lstrip(trim_newline(raw)):
                continue
            more, done = _trim(continuation, trim_newline(raw))
            line += more
        keyword = TOKEN_SPACE.split(line.strip(), maxsplit=1)[0].lower()
        unterminated = False
        for name, chomp in _heredocs(line):
            i, found = _skip_body(lines, i, name, chomp)
            if not found:
                unterminated = True
                break
        yield Span(start, i, keyword, unterminated)


def _trim(continuation: re.Pattern[str], line: str) -> tuple[str, bool]:
    """The line without its continuation escape, and whether the instruction ends here."""
    match = continuation.search(line)
    if match is None:
        return line, True
    return line[: match.start()] + (match[1] or ""), False


def _heredocs(line: str) -> list[tuple[str, bool]]:
    """(name, strip leading tabs) for each heredoc the instruction opens."""
    parts = TOKEN_SPACE.split(line.strip(), maxsplit=1)
    keyword, rest = parts[0].lower(), (parts[1] if len(parts) > 1 else "")
    if keyword == "onbuild":
        parts = TOKEN_SPACE.split(rest.strip(), maxsplit=1)
        keyword, rest = parts[0].lower(), (parts[1] if len(parts) > 1 else "")
    if keyword not in _HEREDOC_KEYWORDS or _is_json(rest):
        return []
    found = []
    for word in split_words(line, raw=True) or []:
        match = HEREDOC_MARKER.match(word)
        names = split_words(match[3], raw=False) if match and match[3] else None
        if match and names is not None and len(names) == 1:
            found.append((names[0], match[2] == "-"))
    return found


def _is_json(rest: str) -> bool:
    """Whether the arguments after any --flags are a JSON array (which has no heredocs)."""
    rest = rest.strip()
    while rest.startswith("--"):
        parts = TOKEN_SPACE.split(rest, maxsplit=1)
        rest = parts[1].strip() if len(parts) > 1 else ""
    if not rest.startswith("["):
        return False
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
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
