"""Parser directives (`# escape=`, `# syntax=`) at the top of a Dockerfile.

The parser applies them but does not report them, so they are read here the same way: only
the leading run of `# key=value` comment lines counts, and only the keys `escape` and
`syntax` (any other key, or any other line, ends the run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orch.dockerfile.lines import BOM, go_lstrip, trim_newline

# The parser's pattern is `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`; Go's RE2 `\s` is ASCII
# [\t\n\f\r ] only, so it is spelled out. Its value part is read by `_value`: as a regular
# expression here, a lazy `.+?` before `\s*\Z` took time in the square of a long run of spaces
# inside the value (20,000 spaces: a second).
_WS = "\t\n\f\r "
_KEY = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=")
_KNOWN = frozenset({"escape", "syntax"})
DEFAULT_ESCAPE = "\\"


@dataclass(frozen=True)
class Directive:
    """One directive line."""

    line: int
    name: str
    value: str


@dataclass(frozen=True)
class Directives:
    """The directives in effect, and the first line the parser rejects, if any."""

    escape: str
    found: tuple[Directive, ...]
    bad_line: int | None


def read_directives(lines: list[str]) -> Directives:
    """Read the leading directives the way the parser does."""
    escape = DEFAULT_ESCAPE
    found: list[Directive] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        text = go_lstrip(trim_newline(raw.removeprefix(BOM) if number == 1 else raw))
        match = _KEY.match(text)
        value = None if match is None else _value(text[match.end() :])
        if match is None or value is None or match[1].lower() not in _KNOWN:
            break
        name = match[1].lower()
        if name in seen or (name == "escape" and value not in ("`", "\\")):
            return Directives(escape, tuple(found), number)
        seen.add(name)
        found.append(Directive(number, name, value))
        if name == "escape":
            escape = value
    return Directives(escape, tuple(found), None)


def _value(rest: str) -> str | None:
    r"""What `\s*(.+?)\s*\Z` captures of the text after a directive's `=` (`.` is any character
    but a newline), in one pass: the text between the whitespace on either side, if that holds
    no newline; for text of whitespace alone, its last character that is not a newline (where
    the lazy capture ends up); None where the pattern does not match."""
    inner = rest.lstrip(_WS).rstrip(_WS)
    if inner:
        return None if "\n" in inner else inner
    return next((c for c in reversed(rest) if c != "\n"), None)
