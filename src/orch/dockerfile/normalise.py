"""The canonical text of a Dockerfile's meaning, from which the build cache key is made."""

from __future__ import annotations

import json
from collections.abc import Sequence

from orch.dockerfile.blanks import collapse_blanks
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.verdicts import IGNORED

# Bumped whenever the rendering of instructions changes, so that old cache entries miss.
_VERSION = "orch-dockerfile/1"


def normalised(instructions: Sequence[Instruction]) -> str:
    """One JSON line per built instruction, from its parsed parts.

    Comments, blank lines, continuations, keyword case, CRLF and the escape directive are
    gone after parsing; ignored instructions are skipped; the FROM is a constant (the caller
    hashes in the base image's digest); unquoted blank runs in shell commands count as one.
    """
    lines = [_VERSION]
    for ins in instructions:
        if ins.keyword in IGNORED:
            continue
        if ins.keyword == "FROM":
            lines.append('["FROM"]')
            continue
        args = list(ins.args)
        if ins.keyword == "RUN" and not ins.json_form:
            args = [collapse_blanks(" ".join(args))]
        parts = [ins.keyword, list(ins.flags), args, ins.json_form, [list(h) for h in ins.heredocs]]
        lines.append(json.dumps(parts))
    return "\n".join(lines) + "\n"
