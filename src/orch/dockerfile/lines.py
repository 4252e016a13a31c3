"""Lines as BuildKit's parser sees them: split on LF only, with Go's notion of whitespace."""

from __future__ import annotations

import re

BOM = "\ufeff"
# What separates an instruction's keyword from its arguments (Go's splitCommand).
TOKEN_SPACE = re.compile(r"[\t\v\f\r ]+")

# unicode.IsSpace from Go, spelled out so that str.strip can use it: Python's str.isspace()
# also accepts the ASCII file/group/record/unit separators, and the parser's behaviour is what
# has to be mirrored.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)


def split_lines(text: str) -> list[str]:
    """The physical lines, without their LF, and without a phantom line after a final LF."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def is_go_space(ch: str) -> bool:
    """unicode.IsSpace from Go, for one character."""
    return len(ch) == 1 and ch in GO_SPACE


def go_lstrip(s: str) -> str:
    """bytes.TrimLeftFunc(s, unicode.IsSpace)."""
    return s.lstrip(GO_SPACE)


def go_strip(s: str) -> str:
    """strings.TrimSpace: Go's whitespace off both ends."""
    return s.strip(GO_SPACE)


def trim_newline(s: str) -> str:
    """bytes.TrimRight(s, "\\r\\n"), which the parser applies to every line."""
    return s.rstrip("\r\n")


def is_comment(line: str) -> bool:
    """A line the parser drops as a comment: '#' after leading whitespace."""
    return go_lstrip(trim_newline(line)).startswith("#")
