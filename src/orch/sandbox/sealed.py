"""The OCI runtime run from a sealed in-memory copy of its binary.

runc guards its binary against a sandbox that would overwrite it through /proc/self/exe
(CVE-2019-5736): unless the binary it runs from is a fully sealed memfd, every `runc init`
first makes itself a read-only copy (runc 1.1: a bind mount of /proc/self/exe, mounted,
remounted read-only and unmounted in the host's mount namespace, or else a memfd copy of the
whole binary) and executes itself again from it. A sealed memfd cannot be written by anyone,
so runc takes it as such a copy and skips both: it is what runc's own `memfd-bind` tool sets up
for a whole host. The server makes one per runtime binary and starts the runtime from it
(`/proc/PID/fd/N`): each sandbox start costs one exec and three mount operations less (0.4 to
2.5 ms of CPU a start on a 2-core machine, docs/launcher-config.md). runsc re-executes itself its
own way and is started from its file.

The copy follows the binary on disk: an upgraded runtime (another inode, size or mtime) is
copied afresh at the next start, as a start from the file would see it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass

# What runc checks for (F_GET_SEALS): no write, no resize, no further change to the seals.
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


@dataclass(frozen=True)
class _Copy:
    identity: tuple[int, int, int, int]  # (device, inode, size, mtime) of the binary copied
    fd: int


_copies: dict[str, _Copy] = {}
_lock = threading.Lock()


def executable(binary: str) -> str:
    """What to execute for `binary` (a name on PATH or a path): its sealed copy's path, or
    `binary` itself when no copy can be made (not installed: the caller's start then fails and
    says so; no memfd on this kernel)."""
    path = shutil.which(binary)
    if path is None:
        return binary
    try:
        st = os.stat(path)
    except OSError:
        return binary
    identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        found = _copies.get(path)
        if found is None or found.identity != identity:
            try:
                fd = _seal(path)
            except OSError:
                return binary
            if not _runs(f"/proc/{os.getpid()}/fd/{fd}"):  # this kernel would not execute it
                os.close(fd)
                return binary
            if found is not None:
                os.close(found.fd)  # a runtime still running from it keeps its own reference
            found = _copies[path] = _Copy(identity, fd)
        return f"/proc/{os.getpid()}/fd/{found.fd}"


def _runs(path: str) -> bool:
    try:
        return subprocess.run([path, "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _seal(path: str) -> int:
    fd = os.memfd_create(f"orch:{os.path.basename(path)}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            sent = 0
            while sent < size:
                n = os.sendfile(fd, source.fileno(), sent, size - sent)
                if n == 0:
                    raise OSError(f"{path} got shorter while it was copied")
                sent += n
        os.fchmod(fd, 0o555)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
