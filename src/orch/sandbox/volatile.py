"""The launcher's state directory on a tmpfs of its own where the host's /run is not one.

Every sandbox makes and removes files there: its bundle (config.json, the /etc files, the pid
file), the runtime's own state (runc's state.json and exec fifo), the namespaces' records. /run
is a tmpfs on most hosts; where it lies on the root disk instead (some VM images), each of those
files costs an inode on ext4, whose allocator, after much creating and deleting, scans the inode
table for recently deleted inodes (`recently_deleted`): measured at ~4% of the server's CPU in a
burst of runs. Nothing there has to outlive a reboot (it describes live sandboxes only), which is
what /run means anyway.

The tmpfs is mounted only over a state directory that holds no sandbox, runtime or namespace
state (as after a clean stop or a sweep), under a lock shared by every server on the host, so a
live server's files are never hidden. The warm sandboxes' helper binaries are carried over.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from pathlib import Path

from orch.errors import EngineError
from orch.sandbox import rootfs

log = logging.getLogger(__name__)
SIZE = "256m"  # bundles and records only: a few KiB per sandbox
STATE_DIRS = ("sandboxes", "runc", "runsc", "netns")  # what a live sandbox leaves files in
_done: dict[Path, bool] = {}
_lock = threading.Lock()


def ensure(state: Path) -> bool:
    """Make `state` a tmpfs if it is not on one and holds no live state; whether it is one now.
    Looked at once per process and directory."""
    with _lock:
        if state in _done:
            return _done[state]
        state.mkdir(parents=True, exist_ok=True)
        with open(state.parent / f".{state.name}.lock", "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # servers starting together: one mounts, the rest see it
            if not on_tmpfs(state):
                if _holds_state(state):
                    log.info("%s holds sandboxes' state: it stays on disk until they are gone", state)
                else:
                    _mount(state)
            _done[state] = on_tmpfs(state)
        return _done[state]


def on_tmpfs(path: Path) -> bool:
    """Whether the mount `path` lies on (the deepest mount point above it) is a tmpfs."""
    target = str(path.resolve())
    best, kind = "", ""
    for point, fstype in rootfs.mount_table():
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind == "tmpfs"


def _holds_state(state: Path) -> bool:
    for name in STATE_DIRS:
        with contextlib.suppress(OSError):
            if any((state / name).iterdir()):
                return True
    return False


def _mount(state: Path) -> None:
    carried = {p.name: p.read_bytes() for g in ("handoff-*", "relay-*") for p in state.glob(g) if p.is_file()}
    try:
        rootfs.mount("tmpfs", state, "tmpfs", rootfs.MS_NOSUID | rootfs.MS_NODEV, f"size={SIZE},mode=0700")
    except EngineError as e:
        log.warning("the sandboxes' state stays on disk: %s", e.message)
        return
    for name, data in carried.items():
        path = state / name
        path.write_bytes(data)
        path.chmod(0o755)
