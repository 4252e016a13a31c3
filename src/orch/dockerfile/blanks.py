"""Collapse the blanks in a shell command that are only word separators.

Line continuations leave runs of spaces in a RUN command (`pip install \\` + indented lines);
to sh any run of unquoted blanks is one separator, so the cache key counts it as one. Blanks
inside quotes, `${...}` or after a backslash are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

_BLANKS = " \t"
_SEPARATING = frozenset({"top", "sub", "tick"})


@dataclass
class _Frame:
    kind: str  # top, sub ($(...)), brace (${...}), dq ("..."), tick (`...`)
    parens: int = 0


def collapse_blanks(command: str) -> str:
    """`command` with unquoted blank runs made single spaces and the ends trimmed.

    The command comes back unchanged if its quoting can't be followed (an unclosed quote, a
    `case` pattern's bare parenthesis), so a change of meaning is never hidden.
    """
    out: list[str] = []
    stack = [_Frame("top")]
    pending = False
    i, n = 0, len(command)
    while i < n:
        frame, ch = stack[-1], command[i]
        if ch in _BLANKS and frame.kind in _SEPARATING:
            pending, i = True, i + 1
            continue
        if pending and out:
            out.append(" ")
        pending = False
        if ch == "\\":
            step = 2
        elif ch == "'" and frame.kind != "dq":
            step = command.find("'", i + 1) + 1 - i
            if step <= 0:
                return command
        else:
            step = _track(stack, command[i : i + 2])
            if step == 0:
                return command
        out.append(command[i : i + step])
        i += step
    return "".join(out) if len(stack) == 1 else command


def _track(stack: list[_Frame], two: str) -> int:
    """Follow the nesting for one character (two for `$(` and `${`); 0 when it can't be followed."""
    frame, ch = stack[-1], two[:1]
    if two in ("$(", "${"):
        stack.append(_Frame("sub" if two == "$(" else "brace"))
        return 2
    if ch == '"' or ch == "`":
        kind = "dq" if ch == '"' else "tick"
        if frame.kind == kind:
            stack.pop()
        else:
            stack.append(_Frame(kind))
    elif ch == "}" and frame.kind == "brace":
        stack.pop()
    elif ch == "(" and frame.kind == "sub":
        frame.parens += 1
    elif ch == ")" and frame.kind == "sub":
        if frame.parens:
            frame.parens -= 1
        else:
            stack.pop()
    elif ch == ")" and frame.kind == "top":
        return 0  # a bare ")" (a case pattern) means the nesting can't be trusted
    return 1
