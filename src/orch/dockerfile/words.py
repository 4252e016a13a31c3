"""Rewrite the words Docker expands (ENV, LABEL, ARG, WORKDIR, USER) to the backslash escape.

Docker expands these words with its own small lexer: outside quotes the escape character
(backslash, or backtick after `# escape=\\``) makes the next character literal; inside double
quotes it escapes only `"`, `$` and itself; inside single quotes nothing is special; `${...}`
holds a nested word. Podman is given a file without the directive, so words are rewritten to
expand to the same text under the backslash escape.
"""

from __future__ import annotations

from dataclasses import dataclass

from orch.dockerfile.lines import GO_SPACE, is_go_space

BACKSLASH = "\\"
_NO_BLANKS = str.maketrans("", "", GO_SPACE)


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
    if _plain(raw, escape, escape_blanks):
        return Word(raw, closed=True)  # nothing in it to rewrite: the common case, made fast
    out: list[str] = []
    # Open contexts, innermost last: '"' inside double quotes, '}' inside ${...}. A stack
    # rather than recursion, because a hostile word can nest ${ thousands deep.
    stack: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        ch, nxt = raw[i], raw[i + 1 : i + 2]
        quoted = bool(stack) and stack[-1] == '"'
        if stack and ch == stack[-1]:
            stack.pop()
            out.append(ch)
        elif ch == "$" and nxt == "{":
            stack.append("}")
            out.append("${")
            i += 1
        elif quoted:
            i += _in_double_quotes(ch, nxt, escape, out)
        elif ch == escape:
            # Escapes the next character; a trailing escape escapes nothing and Docker drops it.
            out.append(BACKSLASH + nxt if nxt else "")
            i += 1
        elif ch == BACKSLASH:  # only reachable with the backtick escape: a literal backslash
            out.append(BACKSLASH * 2)
        elif ch == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                return Word("".join(out) + raw[i:], closed=False)
            out.append(raw[i : end + 1])
            i = end
        elif ch == '"':
            stack.append('"')
            out.append(ch)
        elif escape_blanks and is_go_space(ch):
            out.append(BACKSLASH + ch)
        else:
            out.append(ch)
        i += 1
    return Word("".join(out), closed=not stack)


def _plain(raw: str, escape: str, escape_blanks: bool) -> bool:
    if any(c in raw for c in (escape, BACKSLASH, "'", '"', "$")):
        return False
    return not escape_blanks or raw == raw.translate(_NO_BLANKS)


def _in_double_quotes(ch: str, nxt: str, escape: str, out: list[str]) -> int:
    """Rewrite one character inside double quotes; how many extra characters it used."""
    if ch == escape and nxt in ('"', "$", escape):
        # A backtick needs no escaping once backslash is the escape character.
        out.append("`" if nxt == "`" else BACKSLASH + nxt)
        return 1
    if ch == BACKSLASH and escape == "`":
        out.append(BACKSLASH * 2)  # literal here; doubled so it stays literal
        return 0
    out.append(ch)
    return 0


def literal(value: str) -> str:
    """A word that Docker expands back to exactly `value`: everything else escaped with a backslash."""
    return "".join(ch if ch.isalnum() or ch in "_./:@%+,=~^-" else BACKSLASH + ch for ch in value)
