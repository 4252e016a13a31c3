"""Docker's expansion of one word (ProcessWord in BuildKit's shell lexer), for FROM and ARG values.

Quotes are removed, the escape character makes the next character literal, and `$NAME`,
`${NAME}` and `${NAME:-word}` (also `-`, `:+`, `+`, `:?`, `?`) are replaced. A variable that
is not set expands to nothing, as in Docker. Where the result depends on something this can't
know (a variable mapped to None, a modifier such as `${NAME%pattern}`, a syntax error, a
`${NAME?}` that fails), the answer is None rather than a guess; so it is for a word whose
variables' values add up to more than 64 KiB (no name, path or tag is that long, and without a
bound `ARG A=$A$A` thirty times over would take gigabytes).
"""

from __future__ import annotations

from collections.abc import Mapping

# Deeper nesting than anyone writes; it also keeps the recursion far from Python's limit.
_MAX_DEPTH = 32
_SPECIAL = frozenset("@*#?-$!0")
_MAX_LOOKED_UP = 64 * 1024  # characters of values one word may take in (a value taken twice counts twice)


class _Unknown(Exception):
    """The word's value can't be worked out."""


def expand(word: str, env: Mapping[str, str | None], escape: str = "\\") -> str | None:
    """The value of `word` with `env`, or None when it can't be worked out."""
    try:
        value, _ = _Lexer(word, env, escape).word(0, None, 0)
    except _Unknown:
        return None
    return value


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str | None], escape: str) -> None:
        self.text, self.env, self.escape = text, env, escape
        self.looked_up = 0

    def word(self, i: int, stop: str | None, depth: int) -> tuple[str, int]:
        """The expansion from `i` up to `stop` (None: the end); and the index after it."""
        if depth > _MAX_DEPTH:
            raise _Unknown
        text = self.text
        out: list[str] = []
        while i < len(text):
            ch = text[i]
            if ch == stop:
                return "".join(out), i + 1
            if ch == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise _Unknown
                out.append(text[i + 1 : end])
                i = end + 1
            elif ch == '"':
                value, i = self._double_quoted(i + 1, depth)
                out.append(value)
            elif ch == "$":
                value, i = self._dollar(i + 1, depth)
                out.append(value)
            elif ch == self.escape:
                out.append(text[i + 1 : i + 2])  # an escape at the very end is dropped
                i += 2
            else:
                out.append(ch)
                i += 1
        if stop is not None:
            raise _Unknown  # a ${ that is never closed
        return "".join(out), i

    def _double_quoted(self, i: int, depth: int) -> tuple[str, int]:
        text = self.text
        out: list[str] = []
        while i < len(text):
            ch = text[i]
            if ch == '"':
                return "".join(out), i + 1
            if ch == "$":
                value, i = self._dollar(i + 1, depth)
                out.append(value)
                continue
            i += 1
            # Inside double quotes the escape character escapes only ", $ and itself.
            if ch == self.escape and i < len(text) and text[i] in ('"', "$", self.escape):
                ch = text[i]
                i += 1
            out.append(ch)
        raise _Unknown

    def _dollar(self, i: int, depth: int) -> tuple[str, int]:
        text = self.text
        if not text.startswith("{", i):
            name, i = self._name(i)
            return (self._get(name) or "", i) if name else ("$", i)
        i += 1
        if i >= len(text) or text[i] in "{}:":
            raise _Unknown
        name, i = self._name(i)
        modifier = text[i : i + 2] if text.startswith(":", i) else text[i : i + 1]
        if modifier == "}":
            return self._get(name) or "", i + 1
        if modifier not in (":-", "-", ":+", "+", ":?", "?"):
            raise _Unknown
        word, i = self.word(i + len(modifier), "}", depth + 1)
        value = self._get(name)
        unset = value is None or (modifier.startswith(":") and value == "")
        if modifier.endswith("-"):
            return (word if unset else value or ""), i
        if modifier.endswith("+"):
            return ("" if unset else word), i
        if unset:
            raise _Unknown  # ${NAME?message} stops Docker's build
        return value or "", i

    def _name(self, i: int) -> tuple[str, int]:
        text, start = self.text, i
        if i < len(text) and text[i].isdigit():
            while i < len(text) and text[i].isdigit():
                i += 1
            return text[start:i], i
        if i < len(text) and text[i] in _SPECIAL:
            return text[i], i + 1
        while i < len(text) and (text[i].isalnum() or text[i] == "_"):
            i += 1
        return text[start:i], i

    def _get(self, name: str) -> str | None:
        """The variable's value; None when it is not set; _Unknown when it can't be known."""
        if name in self.env and self.env[name] is None:
            raise _Unknown
        value = self.env.get(name)
        self.looked_up += len(value or "")
        if self.looked_up > _MAX_LOOKED_UP:
            raise _Unknown
        return value
