"""Split text into words the way BuildKit finds heredoc markers (its shell lexer, `\\` escape)."""

from __future__ import annotations

from orch.dockerfile.lines import is_go_space


def split_words(text: str, *, raw: bool) -> list[str] | None:
    """Whitespace-separated words honouring quotes, `\\` escapes and `${...}`.

    With `raw` the quotes and escapes stay in the words; without, they are removed, and so are
    words left empty, as BuildKit's lexer does. None when a quote or `${` is left open, where
    that lexer fails too.
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
            i += 2
        elif ch in "'\"":
            end = _closing_quote(text, i)
            if end < 0:
                return None
            body = text[i : end + 1]
            word.append(body if raw else _unquote(body))
            i = end + 1
        elif text.startswith("${", i):
            end = text.find("}", i)
            if end < 0:
                return None
            word.append(text[i : end + 1])
            i = end + 1
        else:
            word.append(ch)
            i += 1
    if started and (raw or word):
        words.append("".join(word))
    return words


def _closing_quote(text: str, start: int) -> int:
    quote, i = text[start], start + 1
    while i < len(text):
        if text[i] == quote:
            return i
        # Backslash escapes inside double quotes only.
        i += 2 if quote == '"' and text[i] == "\\" else 1
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
