"""Named network namespaces: made, entered and deleted with the kernel's calls, in the server's
own process, exactly as `ip netns add`, `ip netns exec` and `ip netns delete` do.

A namespace is kept alive by a bind mount of its nsfs file at `/run/netns/NAME` (a directory
made a shared mount point, as iproute2 makes it, so the name is seen the same everywhere). To
make one, the calling thread unshares its network namespace, binds `/proc/thread-self/ns/net`
there and goes back to the namespace it was in: a namespace belongs to a thread, not the
process, so the server's other threads never see the switch. `entered` switches a thread for
the time of a block the same way, so a socket opened there (netlink) belongs to the namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from orch.errors import EngineError
from orch.sandbox import rootfs

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
_FIX = "Run the server as root (scripts/setup), then try again."
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_shared_lock = threading.Lock()
_shared: set[Path] = set()


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise EngineError(f"Could not {what}: {os.strerror(err)}.", _FIX)


def _shared_dir(directory: Path) -> None:
    """`directory` a shared mount point, as iproute2 makes /run/netns (once per process)."""
    with _shared_lock:
        if directory in _shared:
            return
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        if _libc.mount(b"none", bytes(directory), None, rootfs.MS_SHARED | MS_REC, None) != 0:
            if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a mount point yet
                _check(-1, f"make {directory} a shared mount point")
            rootfs.mount(str(directory), directory, "none", rootfs.MS_BIND | MS_REC, "")
            rootfs.mount("none", directory, "none", rootfs.MS_SHARED | MS_REC, "")
        _shared.add(directory)


@contextlib.contextmanager
def entered(path: Path) -> Iterator[None]:
    """The calling thread in the network namespace at `path` for the block, then back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.setns(target, CLONE_NEWNET), f"enter the network namespace {path}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _check(_libc.setns(own, CLONE_NEWNET), "return to the server's network namespace")
    finally:
        os.close(own)


def add(name: str, directory: Path = NETNS_DIR) -> Path:
    """A new, empty network namespace (only `lo`, down) kept at `directory/name`."""
    _shared_dir(directory)
    path = directory / name
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    try:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "make a network namespace")
            try:
                rootfs.mount("/proc/thread-self/ns/net", path, "none", rootfs.MS_BIND, "")
            finally:
                _check(_libc.setns(own, CLONE_NEWNET), "return to the server's network namespace")
        finally:
            os.close(own)
    except BaseException:
        delete(name, directory)
        raise
    return path


def delete(name: str, directory: Path = NETNS_DIR) -> None:
    """Let go of the namespace `name` (the kernel destroys it, and its interfaces, when nothing
    holds it any more); gone already is fine."""
    path = directory / name
    rootfs.umount(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
