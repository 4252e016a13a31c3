"""What happens to each kind of instruction: built, ignored with a warning, or rejected.

MAINTAINER is ignored with a warning rather than rejected: it only sets the image's author,
which a sandbox never shows, and refusing old Dockerfiles over it would help nobody.
"""

from __future__ import annotations

import difflib

from orch.dockerfile.findings import Finding, error, warning
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.lines import TOKEN_SPACE

BUILT = frozenset({"FROM", "RUN", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "SHELL"})

_IGNORED = {
    "CMD": "the sandbox sets its own command",
    "ENTRYPOINT": "the sandbox sets its own command",
    "HEALTHCHECK": "the sandbox watches its own processes",
    "STOPSIGNAL": "the sandbox stops its own processes",
}

_NO_CONTEXT = (
    "builds have no build context, so there are no local files to copy",
    "Install what you need with pip or apt-get in a RUN step; your own code and files come with "
    "the agent's bundle at run time.",
)
_REJECTED = {
    "COPY": _NO_CONTEXT,
    "ADD": _NO_CONTEXT,
    "EXPOSE": ("sandboxes don't expose ports", "Remove it; sandboxes accept no inbound connections."),
    "VOLUME": (
        "sandboxes don't mount volumes",
        "Remove it; a sandbox keeps its files in its working directory.",
    ),
    "ONBUILD": (
        "environments are never used as the base of another build",
        "Remove it, or run the command now with RUN.",
    ),
}
IGNORED = frozenset({*_IGNORED, "MAINTAINER"})
_KNOWN = BUILT | IGNORED | _REJECTED.keys()


def verdict(ins: Instruction) -> Finding | None:
    """The finding for an instruction that is not built, or None for one that is."""
    kw = ins.keyword
    if kw in BUILT:
        return None
    if kw in _IGNORED:
        return warning(
            ins.line, kw, f"{kw} is ignored: {_IGNORED[kw]}.", "Remove it, or keep it for local use."
        )
    if kw == "MAINTAINER":
        return warning(
            ins.line, kw, "MAINTAINER is deprecated and ignored.", 'Use LABEL maintainer="..." instead.'
        )
    if kw in _REJECTED:
        why, fix = _REJECTED[kw]
        return error(ins.line, kw, f"{kw} is not supported: {why}.", fix)
    if not kw:
        return error(
            ins.line,
            "",
            "This line continues into nothing: no instruction follows the line-continuation character.",
            "Remove the stray backslash (or backtick, after # escape=`).",
        )
    word = TOKEN_SPACE.split(ins.original.strip(), maxsplit=1)[0]
    shown = word if len(word) <= 40 else word[:40] + "..."
    return error(ins.line, kw, f'"{shown}" is not a Dockerfile instruction.', _unknown_fix(kw))


def _unknown_fix(keyword: str) -> str:
    close = difflib.get_close_matches(keyword, sorted(_KNOWN), n=1, cutoff=0.75) if len(keyword) < 20 else []
    if close:
        return f"Did you mean {close[0]}? Otherwise remove the line."
    # The usual cause is a package list whose previous line lost its trailing backslash.
    return "If the line continues the one above, end that line with a backslash (\\); otherwise remove it."
