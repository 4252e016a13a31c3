"""The host's programs that orch runs by name, through PATH (podman, iptables, ...): where one is
when PATH lacks its folder, and how that is said. A server started with a narrow PATH (no
/usr/sbin) is told which folder to add, never that an installed program is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

# Where Debian installs the programs orch runs (the PATH of a root login shell).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def off_path(command: str) -> Path | None:
    """Where `command` is installed in the system's folders when PATH does not reach it; None
    when PATH does, or when it is not installed there at all."""
    if shutil.which(command):
        return None
    found = shutil.which(command, path=SYSTEM_PATH)
    return Path(found) if found else None


def not_on_path(command: str, where: Path) -> tuple[str, str]:
    """The sentence and the fix for a program installed at `where` that orch cannot run: it runs
    `command` by name, through PATH, and PATH lacks its folder."""
    return (
        f"{command} is installed at {where}, but PATH does not include {where.parent}.",
        f"Add {where.parent} to the PATH that orch runs with (the server's, or this shell's for "
        "`orch admin`), then try again.",
    )
