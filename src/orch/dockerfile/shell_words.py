"""Split text into words the way BuildKit finds heredoc markers (its shell lexer, `\\` escape)."""

from __future__ import annotations

import re

from orch.dockerfile.lines import GO_SPACE

# A word that opens a heredoc: optional fd, <<, optional - (strip tabs), the delimiter word.
HEREDOC_MARKER = re.compile(r"(\d*)<<(-?)([^<]*)\Z")

_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_BLANKS = frozenset(GO_SPACE)  # a set lookup: this loop runs once per character of a line
# The modifiers the lexer of the parser used here (the `dockerfile` package's BuildKit) knows.
# It fails on `${NAME#x}`, `${NAME%x}` and `${NAME/x/y}`, and then finds no heredoc on the line:
# taking them as valid made the walk read the next lines as a heredoc body that the parser reads
# as instructions, which then went unchecked (a garbled --mount flag was built).
_MODIFIERS = ("}", ":-", ":+", ":?", "-", "+", "?")


def split_words(text: str, *, raw: bool) -> list[str] | None:
    """Whitespace-separated words honouring quotes, `\\` escapes and `${...}`.

    With `raw` the quotes and escapes stay in the words; without, they are removed, and so are
    words left empty, as BuildKit's lexer does. None where that lexer fails: an open quote or
    a malformed `${...}`.
    """
    words: list[str] = []
    word: list[str] = []
    started = False  # an empty quoted string is still a raw word
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _BLANKS:
            if started and (raw or any(word)):
                words.append("".join(word))
                word, started = [], False
            i += 1
            continue
        started = True
        if ch == "\\":
            end = i + 2
            word.append(text[i:end] if raw else text[i + 1 : end])
        elif ch in "'\"" or text.startswith("${", i):
            end = _construct_end(text, i)
            if end < 0:
                return None
            word.append(text[i:end] if raw or ch == "$" else _unquote(text[i:end]))
        else:
            end = i + 1
            word.append(ch)
        i = end
    if started and (raw or any(word)):
        words.append("".join(word))
    return words


def _construct_end(text: str, start: int) -> int:
    """The index after the quoted string or `${...}` at `start`, or -1 if it never ends well.

    Nesting is followed with a stack of closing characters rather than recursion, because a
    hostile line can nest `${` thousands deep.
    """
    closers: list[str] = []
    i, n = start, len(text)
    while True:
        if text[i] == "'":
            i = text.find("'", i + 1) + 1
            if i == 0:
                return -1
        elif text[i] == '"':
            closers.append('"')
            i += 1
        else:
            i = _open_brace(text, i, closers)
            if i < 0:
                return -1
        while closers:
            if i >= n:
                return -1
            ch, closer = text[i], closers[-1]
            if ch == closer:
                closers.pop()
                i += 1
            elif ch == "\\":
                i += 2
            elif text.startswith("${", i) or (closer != '"' and ch in "'\""):
                break  # a nested construct opens here
            else:
                i += 1
        if not closers:
            return i


def _open_brace(text: str, start: int, closers: list[str]) -> int:
    """Read `${name` and its modifier, pushing what must close it; the index after, or -1."""
    i, n = start + 2, len(text)
    if i >= n or text[i] in "{}:":
        return -1
    if text[i].isdigit():
        while i < n and text[i].isdigit():
            i += 1
    elif text[i] in _SPECIAL_PARAMS:
        i += 1
    else:
        while i < n and (text[i].isalnum() or text[i] == "_"):
            i += 1
    modifier = next((m for m in _MODIFIERS if text.startswith(m, i)), None)
    if modifier is None:
        return -1
    if modifier != "}":
        closers.append("}")
    return i + len(modifier)


def _unquote(body: str) -> str:
    inner = body[1:-1]
    if body[0] == "'":
        return inner
    out, i = [], 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner) and inner[i + 1] in '"$\\':
            i += 1
        out.append(inner[i])
        i += 1
    return "".join(out)
