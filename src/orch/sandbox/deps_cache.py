"""The dependency cache on this machine's disk (`$ORCH_HOME/deps`): its entries, who uses them,
and what is removed.

- `KEY/`: one install, complete when it holds `.complete` (the dependency files' names, then the
  bytes the entry takes on the disk). Only a finished install is renamed into place.
- `KEY.lock`: held (exclusive `flock`) while KEY is looked up or installed: one install per key.
- `KEY.use`: held shared by each run whose sandbox mounts KEY, from its lookup to its sandbox's end.
- `KEY.tmp-PID-NS/`: an install under way (its tmpfs, then its copy on the disk); an install
  holds KEY.lock as long as its directory exists, so one whose lock is free was left by a
  killed server, and `sweep` removes it at the server's start (with the entries an older
  server made, whose keys never come again).

The entries together are kept within the `deps_cache_size` setting: after each install (and at
the server's start) the least recently used entries that no run uses and no install holds are
removed until they fit (`evict`, the least-recently-used removal that builds' cache mounts
share: disk_lru.py). A lookup that finds an entry marks it used (the mtime of its `.complete`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from orch import disk_lru
from orch.disk_lru import BLOCK as BLOCK
from orch.disk_lru import Entry as Entry
from orch.disk_lru import Use as Use
from orch.disk_lru import disk_size as disk_size
from orch.disk_lru import lock_path as lock_path
from orch.disk_lru import use_path as use_path
from orch.sandbox import rootfs

log = logging.getLogger(__name__)

COMPLETE = ".complete"
TMP = ".tmp-"

_locked = disk_lru.locked
WAIT_LOOK = 0.2  # seconds between looks at a held install's lock (and at a cancel)
_try_lock = disk_lru.try_lock


@contextlib.contextmanager
def install_lock(
    root: Path,
    key: str,
    should_stop: Callable[[], bool] | None = None,
    waiting: Callable[[], None] | None = None,
) -> Iterator[bool]:
    """Hold KEY.lock: the one lookup or install of KEY under way on this machine; True. While
    another holds it (an install of the same files, perhaps another workspace's), `waiting` is
    called once and `should_stop` asked every WAIT_LOOK seconds: once it says stop, False,
    nothing held (a cancel waited for the other install to end)."""
    root.mkdir(parents=True, exist_ok=True)
    path, said = lock_path(root, key), False
    while True:
        f = path.open("a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            if should_stop is not None and should_stop():
                yield False
                return
            if waiting is not None and not said:
                waiting()
                said = True
            time.sleep(WAIT_LOOK)
            continue
        if os.fstat(f.fileno()).st_nlink > 0:  # else it was removed while this waited: again
            break
        f.close()
    with f:
        yield True


def mark_complete(path: Path, names: str, size: int) -> None:
    """Write the entry's `.complete`: a new file, never through a link of the same name."""
    fd = os.open(path / COMPLETE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"{names}\n{size}\n")


def complete(path: Path) -> bool:
    return (path / COMPLETE).is_file()


def _sized(path: Path) -> bool:
    """Whether `path` is a complete entry of this server's making (its size recorded)."""
    try:
        lines = (path / COMPLETE).read_text().splitlines()
    except OSError:
        return False
    return len(lines) > 1 and lines[1].isdigit()


def touch(path: Path) -> None:
    """Mark the entry used now (for least-recently-used eviction)."""
    with contextlib.suppress(OSError):
        os.utime(path / COMPLETE)


def entries(root: Path) -> list[Entry]:
    """The complete entries, least recently used first."""
    found = []
    try:
        children = list(root.iterdir())
    except FileNotFoundError:
        return []
    for path in children:
        if path.is_symlink() or not path.is_dir() or "." in path.name:
            continue
        try:
            marker = path / COMPLETE
            used_at = marker.stat().st_mtime
            lines = marker.read_text().splitlines()
        except OSError:
            continue
        size = int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else disk_size(path)
        found.append(Entry(path.name, path, used_at, size))
    return sorted(found, key=lambda e: e.used_at)


def evict(root: Path, limit: int) -> list[str]:
    """Remove the least recently used entries that no run uses and no install holds until the
    rest take `limit` bytes at most; return the keys removed (disk_lru.evict)."""
    return disk_lru.evict(root, limit, lambda: entries(root), _remove, "dependency cache")


def _remove(entry: Entry) -> None:
    (entry.path / COMPLETE).unlink(missing_ok=True)  # gone for any lookup from now
    shutil.rmtree(entry.path, ignore_errors=True)


def sweep(root: Path) -> int:
    """Remove what killed installs left: their KEY.tmp-* directories (and the tmpfs mounted in
    one) whose KEY.lock nobody holds; the entries of servers before this one's keys (their
    `.complete` has no size: their keys never come again, and an install that read the bundle
    was keyed without it); and the lock files of entries gone. Return how many directories
    went."""
    swept = 0
    try:
        children = list(root.iterdir())
    except FileNotFoundError:
        return 0
    for path in children:
        key, tmp, _ = path.name.partition(TMP)
        if path.is_symlink() or not path.is_dir() or not (tmp or ("." not in key and not _sized(path))):
            continue
        with _try_lock(lock_path(root, key)) as free, _try_lock(use_path(root, key)) as unused:
            if not (free and unused):
                continue  # an install of this key is under way, or a run uses it
            for point in rootfs.mounts_under(path):
                rootfs.umount(point)
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
    for path in children:
        key, dot, kind = path.name.partition(".")
        if dot and kind in ("lock", "use") and not (root / key).exists() and key != "evict":
            with _try_lock(lock_path(root, key)) as free, _try_lock(use_path(root, key)) as unused:
                if free and unused and not any(root.glob(f"{key}{TMP}*")):
                    path.unlink(missing_ok=True)
    return swept
