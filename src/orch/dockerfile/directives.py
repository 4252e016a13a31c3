"""Parser directives (`# escape=`, `# syntax=`) at the top of a Dockerfile.

The parser applies them but does not report them, so they are read here the same way: only
the leading run of `# key=value` comment lines counts, and only the keys `escape` and
`syntax` (any other key, or any other line, ends the run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orch.dockerfile.lines import BOM, go_lstrip, trim_newline

# Go's RE2 `\s` is ASCII [\t\n\f\r ] only, so it is spelled out.
_DIRECTIVE = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
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
        match = _DIRECTIVE.match(text)
        if match is None or match[1].lower() not in _KNOWN:
            break
        name, value = match[1].lower(), match[2]
        if name in seen or (name == "escape" and value not in ("`", "\\")):
            return Directives(escape, tuple(found), number)
        seen.add(name)
        found.append(Directive(number, name, value))
        if name == "escape":
            escape = value
    return Directives(escape, tuple(found), None)
