"""Rewrite the words Docker expands (ENV, LABEL, ARG, WORKDIR, USER) to the backslash escape.

Docker expands these words with its own small lexer: outside quotes the escape character
(backslash, or backtick after `# escape=\\``) makes the next character literal; inside double
quotes it escapes only `"`, `$` and itself; inside single quotes nothing is special; `${...}`
holds a nested word. Podman is given a file without the directive, so words are rewritten to
expand to the same text under the backslash escape.
"""

from __future__ import annotations

from dataclasses import dataclass

from orch.dockerfile.lines import is_go_space

BACKSLASH = "\\"


@dataclass(frozen=True)
class Word:
    """A rewritten word; `closed` is False when a quote or `${` was left open."""

    text: str
    closed: bool


def rewrite(raw: str, escape: str, *, escape_blanks: bool = False) -> Word:
    """Rewrite `raw`, written with `escape`, to mean the same with the backslash escape.

    With `escape_blanks`, unquoted whitespace is escaped too, so that a legacy `ENV KEY a b`
    value becomes one `KEY=a\\ b` word.
    """
    return _Rewriter(raw, escape, escape_blanks).run()


class _Rewriter:
    def __init__(self, raw: str, escape: str, escape_blanks: bool) -> None:
        self.src, self.esc, self.blanks = raw, escape, escape_blanks
        self.i = 0
        self.out: list[str] = []
        self.closed = True

    def run(self) -> Word:
        self._plain(stop=None)
        return Word("".join(self.out), self.closed)

    def _next(self) -> str:
        ch = self.src[self.i]
        self.i += 1
        return ch

    def _peek(self) -> str:
        return self.src[self.i] if self.i < len(self.src) else ""

    def _plain(self, stop: str | None) -> None:
        while self.i < len(self.src):
            ch = self._next()
            if ch == stop:
                self.out.append(ch)
                return
            if ch == self.esc:
                # A trailing escape escapes nothing, and Docker drops it.
                if self.i < len(self.src):
                    self.out.append(BACKSLASH + self._next())
            elif ch == BACKSLASH:  # only reachable with the backtick escape: a literal backslash
                self.out.append(BACKSLASH * 2)
            elif ch == "'":
                self._single()
            elif ch == '"':
                self._double()
            elif ch == "$" and self._peek() == "{":
                self._brace()
            elif self.blanks and is_go_space(ch):
                self.out.append(BACKSLASH + ch)
            else:
                self.out.append(ch)
        if stop is not None:
            self.closed = False

    def _single(self) -> None:
        end = self.src.find("'", self.i)
        if end < 0:
            self.closed = False
            end = len(self.src) - 1
        self.out.append("'" + self.src[self.i : end + 1])
        self.i = end + 1

    def _double(self) -> None:
        self.out.append('"')
        while self.i < len(self.src):
            ch = self._next()
            if ch == '"':
                self.out.append(ch)
                return
            if ch == self.esc and self._peek() in ('"', "$", self.esc):
                escaped = self._next()
                # A backtick needs no escaping once backslash is the escape character.
                self.out.append("`" if escaped == "`" else BACKSLASH + escaped)
            elif ch == BACKSLASH:
                # Literal here (with the backtick escape); doubled so it stays literal.
                self.out.append(BACKSLASH * 2 if self.esc == "`" else BACKSLASH)
            elif ch == "$" and self._peek() == "{":
                self._brace()
            else:
                self.out.append(ch)
        self.closed = False

    def _brace(self) -> None:
        self.out.append("$" + self._next())
        self._plain(stop="}")
