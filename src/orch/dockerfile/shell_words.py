"""Split text into words the way BuildKit finds heredoc markers (its shell lexer, `\\` escape)."""

from __future__ import annotations

from orch.dockerfile.lines import is_go_space

_SPECIAL_PARAMS = frozenset("@*#?-$!0")


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
        if is_go_space(ch):
            if started and (raw or word):
                words.append("".join(word))
                word, started = [], False
            i += 1
            continue
        started = True
        if ch == "\\":
            pair = text[i : i + 2]
            word.append(pair if raw else pair[1:])
            end = i + 2
        elif ch in "'\"":
            end = _closing_quote(text, i)
            if end < 0:
                return None
            word.append(text[i:end] if raw else _unquote(text[i:end]))
        elif text.startswith("${", i):
            end = _brace_end(text, i)
            if end < 0:
                return None
            word.append(text[i:end])
        else:
            word.append(ch)
            end = i + 1
        i = end
    if started and (raw or word):
        words.append("".join(word))
    return words


def _closing_quote(text: str, start: int) -> int:
    """The index after the quote that closes the one at `start`, or -1."""
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == quote:
            return i + 1
        if text.startswith("${", i) and quote == '"':
            i = _brace_end(text, i)
            if i < 0:
                return -1
            continue
        # Backslash escapes inside double quotes only.
        i += 2 if quote == '"' and text[i] == "\\" else 1
    return -1


def _brace_end(text: str, start: int) -> int:
    """The index after the `}` closing `${` at `start`, or -1 where BuildKit reports bad syntax."""
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
    modifier = text[i : i + 2] if text[i : i + 1] == ":" else text[i : i + 1]
    if modifier == "}":
        return i + 1
    if modifier in (":-", ":+", ":?", "-", "+", "?", "#", "%"):
        return _word_end(text, i + len(modifier), "}")
    if modifier == "/":
        middle = _word_end(text, i + 1, "/")
        return -1 if middle < 0 else _word_end(text, middle, "}")
    return -1


def _word_end(text: str, i: int, stop: str) -> int:
    """The index after the unquoted, unescaped `stop` from `i`, or -1."""
    while i < len(text):
        ch = text[i]
        if ch == stop:
            return i + 1
        if ch == "\\":
            i += 2
        elif ch in "'\"":
            i = _closing_quote(text, i)
        elif text.startswith("${", i):
            i = _brace_end(text, i)
        else:
            i += 1
        if i < 0:
            return -1
    return -1


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
