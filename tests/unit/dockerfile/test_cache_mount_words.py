"""A cache-mount RUN after a line whose ${...} BuildKit's lexer can't read.

The parser's lexer (the `dockerfile` package's BuildKit) knows `${NAME}` and the modifiers
`:-`, `-`, `:+`, `+`, `:?` and `?` only; on `${NAME#x}`, `${NAME%x}` or `${NAME/x/y}` it fails,
and the line opens no heredoc. The span walk took those as valid, so it read the next lines as
a heredoc body which the parser reads as instructions: a garbled --mount flag on them went
unchecked, was built, and its render read back as something else (or not at all).
"""

from __future__ import annotations

import dockerfile
import pytest

from orch.dockerfile import validate
from orch.dockerfile.lines import split_lines
from orch.dockerfile.spans import spans
from tests.unit.dockerfile.support import BASE, errors, where

_UNREAD = [
    "${a#x}",
    "${a##x}",
    "${a%x}",
    "${a%%x}",
    "${a/x/y}",
    "${a//x/y}",
    "${a:-${a#x}}",
    "${a:-${a:-${a%x}}}",
]


@pytest.mark.parametrize("word", _UNREAD)
@pytest.mark.parametrize("target", ["/data/你好", "/root/堀"])
def test_a_garbled_cache_mount_after_such_a_line_is_refused(word: str, target: str) -> None:
    v = validate(BASE + f"RUN <<EOF {word}\nRUN --mount=type=cache,target={target} true\n")
    assert where(errors(v)) == [(3, "RUN")]
    assert "non-ASCII" in errors(v)[0].message


@pytest.mark.parametrize("word", [*_UNREAD, "${a:-${a:-x}}", "${a-x}", "${a:+x}", "${a?x}", "${#}"])
def test_the_walk_finds_the_instructions_the_parser_finds(word: str) -> None:
    text = BASE + f"RUN <<EOF {word}\nRUN true\nEOF\n"
    lines = split_lines(text)
    assert [s.start for s in spans(lines, "\\")] == [c.start_line for c in dockerfile.parse_string(text)]
