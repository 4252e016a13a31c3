"""Directories kept on the disk for reuse, within a size: the least recently used go first, never
one in use. Shared by the dependency cache (sandbox/deps_cache.py) and builds' cache mounts
(builder/cache_dirs.py), which differ only in what an entry is and how its use is marked.

Each entry KEY has, in a directory of lock files (`locks`):

- `KEY.use`: held shared by each user of the entry, from before it looks at the entry to after
  it is done with it (`Use`); `evict` never removes an entry whose KEY.use someone holds;
- `KEY.lock`: held exclusively while the entry is made (where entries are made by their owner,
  as the dependency cache's are); `evict` leaves those alone too.

`evict` takes the entries, least recently used first, and removes them until the rest fit; one
eviction at a time per `locks` directory (its `evict.lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

BLOCK = 4096  # what a file, a directory or a link takes at least on the disk


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    used_at: float
    size: int


def lock_path(locks: Path, key: str) -> Path:
    return locks / f"{key}.lock"


def use_path(locks: Path, key: str) -> Path:
    return locks / f"{key}.use"


def locked(path: Path, how: int) -> IO[str]:
    """`path` opened (created if missing) and locked `how`, waiting for it. A lock file removed
    while this waited is not the lock any more: the one at `path` now is taken."""
    while True:
        f = path.open("a")
        fcntl.flock(f, how)
        if os.fstat(f.fileno()).st_nlink > 0:
            return f
        f.close()


class Use:
    """A use of the entry KEY: a shared lock on KEY.use, which `evict` never breaks. Released by
    `release`, or by the kernel when the process dies."""

    def __init__(self, locks: Path, key: str) -> None:
        self._file: IO[str] | None = locked(use_path(locks, key), fcntl.LOCK_SH)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """The exclusive lock on `path` if nobody holds it now (True), without waiting; an existing
    file only: a missing one is nobody's."""
    try:
        f = path.open("r")
    except FileNotFoundError:
        yield True
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def disk_size(path: Path) -> int:
    """What a tree takes on the disk, about: its files' bytes (each inode once), and a block at
    least for each file, directory and link."""
    total, seen = 0, set()
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += max(BLOCK, st.st_size if stat.S_ISREG(st.st_mode) else 0)
    return total + BLOCK


def evict(
    locks: Path,
    limit: int,
    entries: Callable[[], Sequence[Entry]],
    remove: Callable[[Entry], None],
    what: str,
) -> list[str]:
    """Remove the least recently used of `entries()` that nobody uses or makes (their KEY.use
    and KEY.lock in `locks` free), with `remove`, until the rest take `limit` bytes at most;
    return the keys removed. `remove` runs while both locks are held, so a user waiting for the
    entry finds it gone. One eviction at a time per `locks`: another under way is left to do it."""
    removed: list[str] = []
    if not locks.is_dir():
        return removed
    with try_lock(_evict_lock(locks)) as mine:
        if not mine:
            return removed
        found = sorted(entries(), key=lambda e: e.used_at)
        total = sum(e.size for e in found)
        for entry in found:
            if total <= limit:
                break
            with (
                try_lock(lock_path(locks, entry.key)) as free,
                try_lock(use_path(locks, entry.key)) as unused,
            ):
                if not (free and unused):
                    continue
                remove(entry)
            total -= entry.size
            removed.append(entry.key)
    if removed:
        log.info("%s: removed %d entries least recently used", what, len(removed))
    return removed


def _evict_lock(locks: Path) -> Path:
    path = locks / "evict.lock"
    path.touch(exist_ok=True)
    return path
