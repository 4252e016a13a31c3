"""The `${...}` forms Podman 4.3.1 substitutes: `${VAR}`, `${VAR:-default}` and `${VAR:+alt}`.

Podman expands the words of ENV, LABEL, ARG, WORKDIR and USER with imagebuilder's lexer, whose
version in Podman 4.3 knows no other form: BuildKit's `${VAR-default}`, `${VAR+alt}`,
`${VAR:?message}`, `${VAR?message}`, `${VAR#prefix}`, `${VAR%suffix}`, `${VAR/old/new}` and the
like fail the build there (`Missing ':' in substitution`, `Unsupported modifier (?) in
substitution`), before the step runs. They are refused here instead, walking each word as that
lexer does (quotes, backslash escapes, a default's own `${...}`). A RUN's command is its shell's
to expand, in any form (its `--mount` flags are Podman's, checked); ARGs before FROM are expanded
here (global_args.py) and never reach Podman.
"""

from __future__ import annotations

from orch.dockerfile.cache_mounts import private
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction

_EXPANDED = frozenset({"ENV", "LABEL", "ARG", "WORKDIR", "USER"})
_SUPPORTED = "Podman, which builds environments, substitutes only ${VAR}, ${VAR:-default} and ${VAR:+alt}"
_SHOWN = 40


def check_substitutions(ins: Instruction) -> list[Finding]:
    """A finding for the first `${...}` of a stage instruction that Podman can't substitute: in
    its words, or a RUN's flags (its `--mount` options, which Podman expands as it does ENV's:
    `target=${E%/}` failed the build; the flag as Buildah gets it, a cache's own id replaced)."""
    if ins.keyword == "RUN":
        words = [private(flag, "") for flag in ins.flags]
    elif ins.keyword in _EXPANDED:
        words = list(ins.args)
    else:
        return []
    for word in words:
        found = _unsupported(word)
        if found is not None:
            return [_finding(ins, word, *found)]
    return []


def _unsupported(word: str) -> tuple[int, str, str] | None:
    """(where its `${` is, its name, its modifier) of the first `${...}` in `word` that Podman
    can't substitute, or None. The word is in the backslash escape (words.rewrite)."""
    # Open contexts, innermost last: '"' inside double quotes, '}' inside a default or alt word.
    stack: list[str] = []
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        quoted = bool(stack) and stack[-1] == '"'
        if stack and ch == stack[-1]:
            stack.pop()
            i += 1
        elif ch == "\\":
            # The next character is literal (in double quotes a backslash escapes only `"`, `$`
            # and itself, but no other character counts there either).
            i += 2
        elif ch == "'" and not quoted:
            end = word.find("'", i + 1)
            if end < 0:
                return None  # left open: arguments.py says so
            i = end + 1
        elif ch == '"' and not quoted:
            stack.append('"')
            i += 1
        elif ch == "$" and word.startswith("{", i + 1):
            after = _name_end(word, i + 2)
            head = word[after : after + 2]
            if head[:1] == "}":
                i = after + 1
            elif head in (":-", ":+"):
                stack.append("}")
                i = after + 2
            elif head:
                return i, word[i + 2 : after], _modifier(word[after:])
            else:
                return None  # left open
        else:
            i += 1
    return None


def _name_end(word: str, i: int) -> int:
    """Where the name that starts at `i` ends, as imagebuilder reads it: one digit, or letters,
    digits and underscores."""
    if i < len(word) and word[i].isdecimal():
        return i + 1
    while i < len(word) and (word[i].isalpha() or word[i].isdecimal() or word[i] == "_"):
        i += 1
    return i


def _modifier(rest: str) -> str:
    """The modifier that `rest` (what follows the name) begins with, as BuildKit reads it."""
    if rest.startswith(":"):
        return rest[:2] if rest[1:2] not in ("", "}") else ":"
    return rest[:2] if rest[:2] in ("##", "%%", "//") else rest[:1]


def _finding(ins: Instruction, word: str, start: int, name: str, modifier: str) -> Finding:
    shown = _substitution(word, start)
    form = f" (the {modifier} form)" if not modifier[-1:].isalnum() else ""  # not ${1a}'s "a"
    message = f"{ins.keyword} uses {shown}{form}, which would fail the build: {_SUPPORTED}."
    if modifier in ("-", "+") and name:
        fix = (
            f"Write it with a colon, ${{{name}:{modifier}...}} (which treats an empty {name} as unset "
            "too), or set the value in a RUN step, whose shell takes any form."
        )
    else:
        fix = (
            "Use ${VAR:-default} or ${VAR:+alt} instead, or set the value in a RUN step, whose "
            "shell takes any form."
        )
    return error(ins.line, ins.keyword, message, fix)


def _substitution(word: str, start: int) -> str:
    """The `${...}` that starts at `start`, up to its closing brace, shortened if long."""
    depth, end = 0, len(word)
    for i in range(start, len(word)):
        if word.startswith("${", i):
            depth += 1
        elif word[i] == "}":
            depth -= 1
            if depth == 0:
                end = i + 1
                break
    text = word[start:end]
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
