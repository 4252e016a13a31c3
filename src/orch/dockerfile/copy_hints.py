"""Specific advice for the COPY and ADD lines that need no local files, or no line at all.

COPY and ADD are refused (builds have no build context), but some uses have a direct
replacement, which the finding then names: a heredoc (`COPY <<EOF /path`) is a file written in
a RUN, `ADD https://...` a download in a RUN, and the usual `COPY requirements.txt` followed
by an install is not needed at all, since an agent's dependency files are installed for each
run anyway.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction

# What runs install by themselves (docs/agents.md, Dependencies).
_DEPENDENCY_FILES = frozenset({"requirements.txt", "package.json", "package-lock.json"})
_INSTALLS = re.compile(r"requirements\.txt|\b(npm (ci|install|i)|yarn|pnpm (i|install))\b")
_URL = re.compile(r"(https?|git)://|git@", re.IGNORECASE)
_SHOWN = 80


def next_installs(instructions: Sequence[Instruction]) -> list[int | None]:
    """For each instruction, the line of the first RUN after it that installs dependencies."""
    found: list[int | None] = [None] * len(instructions)
    following = None
    for k in range(len(instructions) - 1, -1, -1):
        found[k] = following
        ins = instructions[k]
        if ins.keyword == "RUN" and _INSTALLS.search(" ".join(ins.args)):
            following = ins.line
    return found


def copy_finding(ins: Instruction, install: int | None) -> Finding | None:
    """The finding for a COPY or ADD with a direct replacement, or None for the general one.

    `install` is the line of the first RUN after it that installs dependencies, if any.
    """
    kw = ins.keyword
    if kw not in ("COPY", "ADD") or len(ins.args) < 2 or any(f.startswith("--from") for f in ins.flags):
        return None
    *sources, dest = ins.args
    if ins.heredocs:
        marker = next((s for s in sources if s.startswith("<<")), "<<EOF")
        return error(
            ins.line,
            kw,
            f"{kw} is not supported, not even from a heredoc.",
            f"Write the file in a RUN step instead: RUN cat {marker} > {_shown(dest)}, followed by the "
            "same lines.",
        )
    if kw == "ADD" and all(_URL.match(s) for s in sources):
        return _download(ins, sources[0], dest)
    if install is not None and all(posixpath.basename(s.rstrip("/")) in _DEPENDENCY_FILES for s in sources):
        names = " and ".join(posixpath.basename(s) for s in sources)
        return error(
            ins.line,
            kw,
            f"{kw} {_shown(names)} is not supported: builds have no build context, so there are "
            "no local files to copy.",
            f"Remove this line and the install on line {install}: an agent's requirements.txt "
            "and package.json are installed for each run automatically (and cached).",
        )
    return None


def _download(ins: Instruction, url: str, dest: str) -> Finding:
    if url.lower().startswith("git") or url.lower().endswith(".git"):
        how = f"Clone it in a RUN step instead: RUN git clone {_shown(url)} {_shown(dest)}."
    else:
        if dest.endswith("/"):
            dest += posixpath.basename(url.split("?")[0].rstrip("/")) or "download"
        how = (
            "Download it in a RUN step instead: "
            f"RUN curl -fsSL --create-dirs -o {_shown(dest)} {_shown(url)}."
        )
    return error(ins.line, "ADD", "ADD is not supported, not even for a download.", how)


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
