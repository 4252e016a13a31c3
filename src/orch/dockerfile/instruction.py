"""One parsed Dockerfile instruction, in the normalised form the rest of the package works on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instruction:
    """A parsed instruction.

    `args` is the parser's value, except that words which Docker expands (ENV, LABEL, ARG,
    WORKDIR, USER) are rewritten to the default backslash escape, and ENV/LABEL always hold
    key, value pairs in `key=value` word form (legacy `ENV KEY some value` included).
    """

    line: int
    end_line: int
    keyword: str
    flags: tuple[str, ...]
    args: tuple[str, ...]
    json_form: bool
    heredocs: tuple[tuple[str, str], ...]
    original: str
