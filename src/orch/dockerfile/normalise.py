"""The canonical text of a Dockerfile's meaning, from which the build cache key is made."""

from __future__ import annotations

import json
from collections.abc import Sequence

from orch.dockerfile.blanks import collapse_blanks
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.render import DEFAULT_SHELL
from orch.dockerfile.verdicts import IGNORED

# Bumped whenever the rendering of instructions changes, so that old cache entries miss.
_VERSION = "orch-dockerfile/1"

# Shells that read a RUN's text as an sh command line, so that blanks between words are only
# separators. Under any other SHELL (python3 -c, a script that uses "$0" as data) the text is
# data and is kept exactly.
_SH_LIKE = frozenset({DEFAULT_SHELL, ("/bin/bash", "-c"), ("sh", "-c"), ("bash", "-c")})
_BASH = frozenset({("/bin/bash", "-c"), ("bash", "-c")})


def normalised(instructions: Sequence[Instruction]) -> str:
    """One JSON line per built instruction, from its parsed parts.

    Comments, blank lines, continuations, keyword case, CRLF and the escape directive are
    gone after parsing; ignored instructions are skipped; the FROM is a constant (the caller
    hashes in the base image's digest); unquoted blank runs in shell commands count as one
    while the shell in effect reads them as sh does (see _SH_LIKE), and not otherwise.
    """
    lines = [_VERSION]
    shell: tuple[str, ...] = DEFAULT_SHELL
    for ins in instructions:
        if ins.keyword in IGNORED:
            continue
        if ins.keyword == "FROM":
            lines.append('["FROM"]')
            continue
        if ins.keyword == "SHELL":
            shell = tuple(ins.args)
        args = list(ins.args)
        if ins.keyword == "RUN" and not ins.json_form and _reads_as_sh(shell, " ".join(args)):
            args = [collapse_blanks(" ".join(args))]
        parts = [ins.keyword, list(ins.flags), args, ins.json_form, [list(h) for h in ins.heredocs]]
        lines.append(json.dumps(parts))
    return "\n".join(lines) + "\n"


def _reads_as_sh(shell: tuple[str, ...], command: str) -> bool:
    """Whether `shell` reads `command` as sh would, so its unquoted blank runs are separators.

    Bash's `$'...'` quoting lets a backslash escape a quote, which collapse_blanks doesn't
    follow, so such a command is kept exactly under bash.
    """
    if shell not in _SH_LIKE:
        return False
    return not (shell in _BASH and "$'" in command)
