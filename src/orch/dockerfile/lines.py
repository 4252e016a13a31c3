"""Lines as BuildKit's parser sees them: split on LF only, with Go's notion of whitespace."""

from __future__ import annotations

import re

BOM = "\ufeff"
# What separates an instruction's keyword from its arguments (Go's splitCommand).
TOKEN_SPACE = re.compile(r"[\t\v\f\r ]+")

# Python's str.isspace() also accepts the ASCII file/group/record/unit separators; Go's
# unicode.IsSpace does not, and the parser's behaviour is what has to be mirrored.
_NOT_GO_SPACE = frozenset("\x1c\x1d\x1e\x1f")


def split_lines(text: str) -> list[str]:
    """The physical lines, without their LF, and without a phantom line after a final LF."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def is_go_space(ch: str) -> bool:
    """unicode.IsSpace from Go."""
    return ch.isspace() and ch not in _NOT_GO_SPACE


def go_lstrip(s: str) -> str:
    """bytes.TrimLeftFunc(s, unicode.IsSpace)."""
    i = 0
    while i < len(s) and is_go_space(s[i]):
        i += 1
    return s[i:]


def trim_newline(s: str) -> str:
    """bytes.TrimRight(s, "\\r\\n"), which the parser applies to every line."""
    return s.rstrip("\r\n")


def is_comment(line: str) -> bool:
    """A line the parser drops as a comment: '#' after leading whitespace."""
    return go_lstrip(trim_newline(line)).startswith("#")
