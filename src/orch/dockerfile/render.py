"""The Containerfile Podman 4.3.1 builds: the validated instructions, re-emitted one per line.

Podman's parser knows no heredocs and no escape directive and treats any line that ends in a
backslash as continued, so every instruction is written out from its parsed parts in a form
that parser reads back unchanged. Podman also ignores SHELL when it writes OCI images, so
SHELL is not written out: each later shell-form RUN names its shell itself, in exec form.
A cache mount's id is its owner's (cache_mounts.py), never the user's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from orch.dockerfile.cache_mounts import private
from orch.dockerfile.heredoc import heredoc_argv
from orch.dockerfile.instruction import Instruction

DEFAULT_SHELL = ("/bin/sh", "-c")
# Podman's parser reads at most 64 KiB per physical line; longer ones are split with
# continuations, keeping each piece well under the limit even in 4-byte characters.
_FOLD = 8_000


def render_containerfile(instructions: Sequence[Instruction], base_image: str, cache_owner: str = "") -> str:
    """Containerfile text for Podman, with FROM replaced by `FROM base_image`, and each cache
    mount's id made `cache_owner`'s (cache_mounts.owner: the platform's and the workspace's).

    Raises ValueError for an instruction that is never built (validation removes those).
    """
    shell: Sequence[str] = DEFAULT_SHELL
    out: list[str] = []
    for ins in instructions:
        kw = ins.keyword
        if kw == "FROM":
            out.append(f"FROM {base_image}")
        elif kw == "RUN":
            out.append(_run(ins, shell, cache_owner))
        elif kw == "SHELL":
            shell = ins.args
        elif kw in ("ENV", "LABEL"):
            pairs = zip(ins.args[::2], ins.args[1::2], strict=False)
            out.append(f"{kw} " + " ".join(f"{key}={_word(value)}" for key, value in pairs))
        elif kw in ("ARG", "WORKDIR", "USER"):
            out.append(f"{kw} " + " ".join(_word(word) for word in ins.args))
        else:
            raise ValueError(f"{kw} is not an instruction that environments build")
    return "".join(_fold(line) + "\n" for line in out)


def _run(ins: Instruction, shell: Sequence[str], cache_owner: str) -> str:
    flags = "".join(_flag(private(f, cache_owner)) + " " for f in ins.flags)
    command = " ".join(ins.args)
    if ins.heredocs:
        return f"RUN {flags}{_json(heredoc_argv(command, ins.heredocs, shell))}"
    if ins.json_form:
        return f"RUN {flags}{_json(ins.args)}"
    if tuple(shell) == DEFAULT_SHELL and _plain(command):
        return f"RUN {flags}{command}"
    # The exec form with the current shell runs exactly what shell form would; it is used when
    # shell form would not survive the trip (a trailing backslash, a leading "[" or "--",
    # control characters) or would run under the wrong shell.
    return f"RUN {flags}{_json([*shell, command])}"


def _plain(command: str) -> bool:
    return (
        bool(command)
        and command == command.strip()
        and command.isprintable()
        and not command.startswith(("[", "--"))
        and not command.endswith("\\")
    )


def _json(args: Sequence[str]) -> str:
    return json.dumps(list(args), ensure_ascii=False)


def _flag(flag: str) -> str:
    """A flag as the parser reads it back: values with blanks, quotes or backslashes quoted."""
    name, sep, value = flag.partition("=")
    if not any(c.isspace() or c in "\"'\\" for c in value):
        return flag
    return name + sep + '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _word(word: str) -> str:
    """A word the parser reads back whole at the end of a line.

    A final backslash would continue the line and final blanks would be trimmed; an empty
    quoted string after them changes nothing in the expanded value. (Words reach here with
    escapes in pairs, so a final backslash is always an escaped one.)
    """
    return word + '""' if word[-1:].isspace() or word.endswith("\\") else word


def _fold(line: str) -> str:
    """Split an over-long line with continuations where neither parser can misread the join."""
    pieces, start = [], 0
    while len(line) - start > _FOLD:
        cut = _cut(line, start)
        if cut is None:
            break
        pieces.append(line[start:cut])
        start = cut
    pieces.append(line[start:])
    return "\\\n".join(pieces)


def _cut(line: str, start: int) -> int | None:
    """Where to end the piece that starts at `start`, if a safe place is near the limit."""
    # Not before a blank or '#' (the parsers drop such continuation lines as empty or as
    # comments) and not after a backslash (the join would read as an escaped backslash).
    for cut in range(start + _FOLD, start + _FOLD // 2, -1):
        if line[cut - 1] != "\\" and not line[cut].isspace() and line[cut] != "#":
            return cut
    return None
