"""The command BuildKit runs for a heredoc RUN, so that Podman (which has no heredocs) runs the same.

BuildKit has three cases. A RUN that is only a heredoc marker runs the body as the script:
given whole to the shell, or, when the body starts with `#!`, written to an executable file
that is run. Any other RUN is rebuilt as one shell script: the command line, then each body
followed by its delimiter, which the shell reads as ordinary heredocs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from orch.dockerfile.shell_words import HEREDOC_MARKER, split_words

_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
# Each argument a program receives is capped (MAX_ARG_STRLEN, 128 KiB), so a long script body
# is handed over in parts of at most this many characters (4 bytes each at worst).
_PART = 30_000
_EXEC = (
    'd=$(mktemp -d) || exit 1; f="$d/{name}"; '
    'for part in "$@"; do printf %s "$part"; done > "$f" && chmod 755 "$f" && "$f"; '
    's=$?; rm -rf "$d"; exit $s'
)


def heredoc_argv(command: str, heredocs: Sequence[tuple[str, str]], shell: Sequence[str]) -> list[str]:
    """The argv BuildKit runs for the shell-form `RUN command` with these heredoc bodies."""
    chomp = _lone_marker(command)
    if chomp is None or not heredocs:
        return [*shell, command + "".join(f"\n{body}{name}" for name, body in heredocs)]
    name, body = heredocs[0]
    if chomp:
        body = _LEADING_TABS.sub("", body)
    if not body.startswith("#!"):
        return [*shell, body]
    # BuildKit mounts the body as an executable file; a temporary file stands in for it.
    # The plumbing is POSIX sh whatever SHELL says: the body's own #! line picks its interpreter.
    parts = [body[i : i + _PART] for i in range(0, len(body), _PART)]
    return ["/bin/sh", "-c", _EXEC.format(name=_file_name(name)), "sh", *parts]


def _lone_marker(command: str) -> bool | None:
    """Whether a command that is one heredoc marker strips tabs (`<<-`); None if it is more."""
    match = HEREDOC_MARKER.match(command)
    if match is None or not match[3]:
        return None
    words = split_words(match[3], raw=False)
    return match[2] == "-" if words is not None and len(words) == 1 else None


def _file_name(name: str) -> str:
    safe = _UNSAFE_NAME.sub("_", name)
    return safe if safe.strip(".") else "script"
