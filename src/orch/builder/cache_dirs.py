"""The host directories of builds' cache mounts (`RUN --mount=type=cache`), kept within a size.

Buildah keeps each cache mount's content in `$TMPDIR/buildah-cache/ID` (`/var/tmp/...` without
TMPDIR, as Buildah chooses), for good; orch's ids are a platform's and a workspace's own
(dockerfile/cache_mounts.py: `orch-INSTANCE-WORKSPACE-HASH`). So that they do not grow without
end, a platform keeps its own within its `cache_mounts_size` setting, with the dependency
cache's least-recently-used removal (disk_lru.py):

- a build holds `Use` on the directories it mounts (a shared lock on `$ORCH_HOME/build-cache/
  ID.use`) from before `podman build` starts to its end, and marks them used then (their mtime);
- `evict`, after each build that mounted one and at the server's start, removes this platform's
  least recently used directories that no build of it uses until the rest fit. Other
  platforms' directories are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from orch import disk_lru
from orch.dockerfile.cache_mounts import prefix

log = logging.getLogger(__name__)

BUILDAH_TMP = Path("/var/tmp")  # noqa: S108  # Buildah's default


def root() -> Path:
    """Where Buildah keeps cache mounts' directories."""
    return Path(os.environ.get("TMPDIR") or BUILDAH_TMP) / "buildah-cache"


def locks(home: Path) -> Path:
    """The platform's lock files of its cache mounts (`ID.use`, `evict.lock`)."""
    return home / "build-cache"


class Use:
    """A build's hold on the cache directories `ids` it mounts: `evict` leaves them alone until
    `release`. Marks them used when taken and when released."""

    def __init__(self, home: Path, ids: Iterable[str]) -> None:
        self._ids = list(ids)
        self._uses: list[disk_lru.Use] = []
        if self._ids:
            locks(home).mkdir(parents=True, exist_ok=True)
        for cid in self._ids:
            self._uses.append(disk_lru.Use(locks(home), cid))
        self._touch()

    def _touch(self) -> None:
        for cid in self._ids:
            with contextlib.suppress(OSError):  # not made yet: Buildah makes it at its step
                os.utime(root() / cid)

    def release(self) -> None:
        self._touch()
        for use in self._uses:
            use.release()
        self._uses = []

    def __enter__(self) -> Use:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def entries(instance: str) -> list[disk_lru.Entry]:
    """Platform `instance`'s cache directories, least recently used first."""
    found = []
    try:
        children = list(root().iterdir())
    except OSError:
        return []
    for path in children:
        if not path.name.startswith(prefix(instance)):
            continue
        try:
            st = path.lstat()
        except OSError:
            continue
        if path.is_symlink() or not path.is_dir():
            continue
        found.append(disk_lru.Entry(path.name, path, st.st_mtime, disk_lru.disk_size(path)))
    return sorted(found, key=lambda e: e.used_at)


def evict(home: Path, instance: str, limit: int, owner: str = "") -> list[str]:
    """Remove platform `instance`'s least recently used cache directories that none of its
    builds uses until the rest take `limit` bytes at most; return their ids. The lock files
    of directories gone go too, unless a build holds one. With `owner` (cache_mounts.owner),
    only that owner's directories count (a deleted workspace's: `limit` 0 removes them all)."""
    where = locks(home)
    where.mkdir(parents=True, exist_ok=True)
    start = f"orch-{owner}-" if owner else prefix(instance)

    def listed() -> list[disk_lru.Entry]:
        found = [e for e in entries(instance) if e.key.startswith(start)]
        for entry in found:
            # So that evict's lock is a lock: a build starting meanwhile waits for the removal.
            disk_lru.use_path(where, entry.key).touch(exist_ok=True)
        return found

    def remove(entry: disk_lru.Entry) -> None:
        shutil.rmtree(entry.path, ignore_errors=True)
        # Its lock file too (held by evict now): a build waiting on it takes a new one.
        disk_lru.use_path(where, entry.key).unlink(missing_ok=True)

    removed = disk_lru.evict(where, limit, listed, remove, "cache mounts")
    for path in where.glob(f"{prefix(instance)}*.use"):
        if not (root() / path.name.removesuffix(".use")).exists():
            with disk_lru.try_lock(path) as free:
                if free:
                    path.unlink(missing_ok=True)
    return removed
