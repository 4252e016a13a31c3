"""What a running build writes to the disk, bounded while it runs.

Build steps write into Buildah's working container: an overlay upper directory in the host's
container storage, with no quota on this kind of host (ext4: `--storage-opt size=` needs xfs
project quotas). `ORCH_BUILD_MAX_SIZE` checks the finished image; this checks the build on the
way, at each of its watcher's polls (engine/podman.py, once a second):

    Guard.check()   the reason to stop the build now (a Stop), or None:
                    - the container storage's file system has less free than the reserve
                      (statvfs: cheap, every poll);
                    - the build's working containers have written more than the bound (their
                      upper directories' blocks, walked on a thread of its own, so that a long
                      walk never holds the watcher's other checks, its timeout and a stop; at
                      most a tenth of the time: a walk that took t seconds is not started
                      again before 10 t have passed; its result is seen at the next poll)
    Storage         where Podman keeps containers (`podman info`), and so the upper directories
                    of a build's working containers: those whose Buildah state names the
                    build's own owner argument (engine/podman.py's OWNER_ARG), never guessed

The engine stops a build a Stop names as a timeout stops it (its process group, its RUN step's
processes, its working container: build_steps.py), which frees what it wrote, and fails it with
`Stop.error()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orch.errors import BuildFailed
from orch.sizes import format_apart, format_size

DUTY = 10.0  # a walk of the upper directories takes at most 1/DUTY of the build's time
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stop:
    """Why a build was stopped for the disk: `written` past `max_size`, or `free` under `reserve`."""

    bound: int
    measured: int
    reserve: bool = False  # the free-space reserve, not the build's own size
    where: str = ""  # the container storage's directory (for the reserve's sentence)

    def error(self, tail: list[str], started: bool = True) -> BuildFailed:
        """Why the build failed: it was stopped (or, not `started`, not begun: the disk was below
        the reserve already)."""
        if self.reserve:
            return BuildFailed(
                f"The build {'was stopped' if started else 'did not start'}: the disk that holds "
                f"the container storage ({self.where}) had {format_apart(self.measured, self.bound)} "
                f"free, less than the {format_size(self.bound)} "
                "that ORCH_BUILD_DISK_RESERVE keeps free for the store, the other builds and "
                "the sandboxes",
                "Build it again once that disk has room: the server's operator frees space on it "
                "(unused images, old environments) or lowers ORCH_BUILD_DISK_RESERVE.",
                tail=tail,
            )
        return BuildFailed(
            f"The build was stopped: its steps had written {format_apart(self.measured, self.bound)}, more "
            f"than the {format_size(self.bound)} that ORCH_BUILD_MAX_SIZE allows",
            "Make the steps write less (install only what runs need, and remove downloads and "
            "caches in the step that made them), or ask the server's operator to raise "
            "ORCH_BUILD_MAX_SIZE.",
            tail=tail,
        )


def _on_a_thread(walk: Callable[[], None]) -> None:
    threading.Thread(target=walk, name="orch-build-walk", daemon=True).start()


@dataclass
class Guard:
    """The decision, at each poll, whether a running build must stop for the disk. `written`
    and `free` measure (bytes); `clock` is time.monotonic's kind; `start` runs a walk (`written`),
    on a thread of its own unless a test says otherwise. A bound of 0 is none."""

    max_size: int
    reserve: int
    written: Callable[[], int]
    free: Callable[[], int]
    where: str = ""
    clock: Callable[[], float] = time.monotonic
    start: Callable[[Callable[[], None]], None] = _on_a_thread
    _next_walk: float = field(default=float("-inf"), init=False)
    _walking: bool = field(default=False, init=False)
    _measured: int | None = field(default=None, init=False)  # the last walk's, not yet seen
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def check(self) -> Stop | None:
        if self.reserve:
            free = self.free()
            if free < self.reserve:
                return Stop(self.reserve, free, reserve=True, where=self.where)
        if self.max_size:
            with self._lock:
                begin = not self._walking and self.clock() >= self._next_walk
                self._walking |= begin
            if begin:
                self.start(self._walk)
            with self._lock:
                written, self._measured = self._measured, None
            if written is not None and written > self.max_size:
                return Stop(self.max_size, written)
        return None

    def _walk(self) -> None:
        began = self.clock()
        written: int | None = None
        try:
            written = self.written()
        except Exception:  # the storage's files changing under the walk: measured again next time
            log.exception("measuring what a build wrote")
        with self._lock:
            self._measured = written
            self._next_walk = began + DUTY * (self.clock() - began)
            self._walking = False


@dataclass(frozen=True)
class Storage:
    """Podman's container storage: its root (`GraphRoot`) and driver (`overlay`)."""

    root: Path
    driver: str

    def working_layers(self, owner_arg: str, value: str, skip: set[str] | None = None) -> list[Path]:
        """The upper (writable) directories of Buildah's working containers whose build argument
        `owner_arg` is `value`. `skip`: ids of other builds' (read once, then remembered)."""
        containers = self.root / f"{self.driver}-containers"
        try:
            listed = json.loads((containers / "containers.json").read_text())
        except (OSError, ValueError):
            return []
        found = []
        for c in listed:
            cid, layer = str(c.get("id") or ""), str(c.get("layer") or "")
            if not cid or not layer or (skip is not None and cid in skip):
                continue
            try:
                state = json.loads((containers / cid / "userdata" / "buildah.json").read_text())
            except (OSError, ValueError):
                continue  # not Buildah's (a sandbox's), or not written yet: read at the next poll
            if (state.get("Args") or {}).get(owner_arg) == value:
                found.append(self.root / self.driver / layer / "diff")
            elif skip is not None:
                skip.add(cid)
        return found

    def free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def disk_usage(top: Path) -> int:
    """The blocks a tree takes on the disk (each inode once; a sparse file only what it holds),
    without following links or crossing into other file systems."""
    total, seen = 0, set()
    try:
        device = top.lstat().st_dev
    except OSError:
        return 0
    stack = [str(top)]
    while stack:
        path = stack.pop()
        with contextlib.suppress(OSError), os.scandir(path) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_dev != device:
                        continue
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
    return total


def guard(storage: Storage, owner_arg: str, value: str, max_size: int, reserve: int) -> Guard:
    """The Guard of the build whose owner argument is `value`, measured on the real disk."""
    others: set[str] = set()

    def written() -> int:
        return sum(disk_usage(d) for d in storage.working_layers(owner_arg, value, others))

    return Guard(max_size, reserve, written, storage.free, where=str(storage.root))
