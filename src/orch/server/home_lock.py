"""One server per ORCH_HOME. A server's start settles what a stopped server of its home left (its
runs, sandboxes, builds, warm sandboxes' networks) and writes `url` to the home's config.toml:
a second server on a home whose server runs would take the live one's work for leftovers. So a
server holds an exclusive `flock` on $ORCH_HOME/server.lock for its whole life, taken before
any of that, and a second one is refused. The kernel releases the lock when the process dies,
however it dies, so a killed server's restart still starts (and still settles its leftovers).
The file says who holds it (pid, then URL), for the refusal's sentence; only servers take it,
never a cluster node's agent (docs/scale.md)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from orch.errors import InvalidInput

LOCK_FILE = "server.lock"


class HomeLock:
    """The held lock of one home; `say` records the server's URL in it, `release` lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self.say(None)

    def say(self, url: str | None) -> None:
        """Write who holds the lock: this process, listening on `url` (None: not yet known)."""
        text = json.dumps({"pid": os.getpid(), "url": url}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = -1


def hold(home: Path) -> HomeLock:
    """Take `home`'s server lock at once, or raise InvalidInput naming the server that holds it.
    The descriptor is not inherited by the commands the server starts (Podman's, the runtimes'),
    so none of them keeps the lock past the server."""
    path = home / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise InvalidInput(
            f"Cannot open {path}: {e.strerror}.",
            "Make ORCH_HOME writable by the server's user, or set ORCH_HOME to another directory.",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise _another(home, holder) from None
    except OSError as e:  # a file system without locks
        os.close(fd)
        raise InvalidInput(
            f"Cannot lock {path}: {e.strerror}.",
            "Set ORCH_HOME to a directory on a local file system.",
        ) from None
    return HomeLock(path, fd)


def refuse_if_held(home: Path) -> None:
    """Raise hold's refusal when a server holds `home`'s lock, touching nothing (the home and the
    lock file are not made): for a start refused before its lock is taken (its port taken, by
    that very server), whose sentence would otherwise blame the port."""
    try:
        fd = os.open(home / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no home, or no lock file: no server has run here
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _another(home, _holder(fd)) from None
    except OSError:
        return
    finally:
        os.close(fd)  # a lock taken here goes with it


def _another(home: Path, holder: str) -> InvalidInput:
    return InvalidInput(
        f"Another orch server ({holder}) runs on ORCH_HOME {home}; a second one would take its "
        "runs, sandboxes and builds for a stopped server's leftovers.",
        "Stop that server first, or set ORCH_HOME to another directory for a platform of its own.",
    )


def _holder(fd: int) -> str:
    """The holder as the lock file says it: "pid 1234, http://127.0.0.1:8750"; what is unknown
    (a holder still starting, or one between writes) is left out."""
    found: dict[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        read = json.loads(os.pread(fd, 4096, 0) or b"{}")
        found = read if isinstance(read, dict) else {}
    said = [f"pid {found['pid']}"] if isinstance(found.get("pid"), int) else []
    said += [str(found["url"])] if isinstance(found.get("url"), str) else []
    return ", ".join(said) or "pid unknown"
