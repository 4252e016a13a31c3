"""Root file systems for sandboxes started by the runc launcher.

- An image's root: `podman image mount IMAGE` (a read-only overlay of its layers), mounted once
  per image and cached. Such a path vanishes when something unmounts the image (`podman rmi`,
  `podman image unmount`), so it is checked before each use and mounted again when gone.
- A sandbox's root: an overlay whose lower layer is the image's root and whose upper layer lies
  on a tmpfs of a given size, mounted on the host. Writes go to the tmpfs, never to the host's
  disk; its pages are charged to the memory cgroup of the process that writes them, i.e. the
  sandbox's, so they count against its memory limit; a full tmpfs ends a write with ENOSPC.
  With `metacopy=on` a chown copies up metadata only, so handing the home directory to the
  sandbox user costs no data copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orch.errors import EngineError
from orch.sandbox.layout import HOME

_FIX = "Run the server as root with Podman installed (scripts/setup), then try again."
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
MS_NOSUID, MS_NODEV = 0x2, 0x4
MS_BIND, MS_SHARED = 0x1000, 1 << 20
# The kernel's mount API of 5.2+ (the same numbers on every architecture), for `attach`.
_OPEN_TREE, _MOVE_MOUNT, _MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _O_CLOEXEC, _AT_EMPTY_PATH, _AT_RECURSIVE, _AT_FDCWD = 1, 0o2000000, 0x1000, 0x8000, -100
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
MNT_DETACH = 0x2


@dataclass(frozen=True)
class Image:
    """An image's mounted root and the parts of its config a sandbox's process needs."""

    ref: str
    id: str
    root: Path
    env: tuple[str, ...] = ()  # KEY=VALUE, as the image sets them
    workdir: str = ""
    user: str = ""
    # Its /etc/passwd and /etc/group (None: missing, or a symlink), read once: its layers never change.
    passwd: str | None = None
    group: str | None = None


class Images:
    """Image roots, mounted once each and cached. Resolving a tag costs a `podman image
    inspect` (tens of ms), so it is asked again only when Podman's image list changed (the
    mtime of its images.json) or the mounted root is gone."""

    def __init__(self, podman: str = "podman") -> None:
        self.podman = podman
        self._cache: dict[str, tuple[Image, int]] = {}
        self._lock = threading.Lock()
        self._asking: dict[str, threading.Lock] = {}  # one look at Podman per ref at a time
        self._index: Path | None = None

    def get(self, ref: str) -> Image:
        found = self._cached(ref)
        if found is not None:
            return found
        with self._lock:
            asking = self._asking.setdefault(ref, threading.Lock())
        # The runs that find the cache stale together (a burst after an image change) wait for
        # one `podman image inspect`, not one each.
        with asking:
            return self._cached(ref) or self._look(ref)

    def _cached(self, ref: str) -> Image | None:
        stamp = self.stamp()
        with self._lock:
            cached = self._cache.get(ref)
        if cached and cached[1] == stamp and os.path.ismount(cached[0].root):
            return cached[0]
        return None

    def _look(self, ref: str) -> Image:
        stamp = self.stamp()
        with self._lock:
            cached = self._cache.get(ref)
        image = self._inspect(ref)
        if not (cached and cached[0].id == image.id and os.path.ismount(cached[0].root)):
            root = self._mount(ref)
            passwd, group = (read_inside(root, f"etc/{name}") for name in ("passwd", "group"))
            image = dataclasses.replace(image, root=root, passwd=passwd, group=group)
        else:
            image = cached[0]
        with self._lock:
            self._cache[ref] = (image, stamp)
        return image

    def tagged(self) -> set[str] | None:
        """The ids of the images that have a name now (None: Podman's list could not be read)."""
        self.stamp()  # finds the list
        assert self._index is not None
        try:
            listed = json.loads(self._index.read_text())
        except (OSError, ValueError):
            return None
        return {str(i.get("id")) for i in listed if isinstance(i, dict) and i.get("names")}

    def stamp(self) -> int:
        """Changes whenever Podman's list of images does (the mtime of its images.json)."""
        if self._index is None:
            out = self._podman("info", "--format", "{{.Store.GraphRoot}} {{.Store.GraphDriverName}}")
            graph_root, driver = out.split()
            self._index = Path(graph_root) / f"{driver}-images" / "images.json"
        try:
            return self._index.stat().st_mtime_ns
        except OSError:
            return 0

    def _inspect(self, ref: str) -> Image:
        missing = EngineError(f"The image {ref} is missing.", "Build it first (orch env build).")
        try:
            data = json.loads(self._podman("image", "inspect", "--format", "json", ref) or "[]")
        except EngineError as e:
            if "image not known" in e.message or "no such image" in e.message.lower():
                raise missing from None  # not a setup problem: the fix for a setup one would mislead
            raise
        if not data:
            raise missing
        config = data[0].get("Config") or {}
        return Image(
            ref=ref,
            id=str(data[0]["Id"]),
            root=Path(),
            env=tuple(config.get("Env") or ()),
            workdir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
        )

    def _mount(self, ref: str) -> Path:
        path = Path(self._podman("image", "mount", ref).strip())
        if not os.path.ismount(path):
            raise EngineError(f"podman image mount {ref} printed {path}, which is not mounted.", _FIX)
        return path

    def _podman(self, *args: str) -> str:
        try:
            res = subprocess.run(
                [self.podman, *args], capture_output=True, text=True, timeout=120, check=False
            )
        except FileNotFoundError:
            raise EngineError("Podman is not installed.", _FIX) from None
        if res.returncode != 0:
            said = res.stderr.strip().rstrip(".")
            raise EngineError(f"podman {' '.join(args[:2])} failed: {said}.", _FIX)
        return res.stdout


@dataclass(frozen=True)
class Root:
    """A sandbox's root: `path` (the overlay) over the image, its upper layer on the tmpfs `layer`."""

    path: Path
    layer: Path


def mount_root(
    image_root: Path, where: Path, size: int, *, chown_home: tuple[int, int] | None = None
) -> Root:
    """Mount a sandbox's root under the directory `where` (created): a tmpfs of `size` bytes at
    where/layer for the upper layer, the overlay at where/rootfs. With `chown_home`, HOME and
    everything the image put under it is handed to that uid:gid (in the upper layer only)."""
    for part in (str(image_root), str(where)):
        if "," in part or ":" in part:
            raise EngineError(f"The path {part} cannot be an overlay layer (it has ',' or ':').", _FIX)
    root = Root(where / "rootfs", where / "layer")
    root.layer.mkdir(parents=True, exist_ok=True)
    root.path.mkdir(exist_ok=True)
    try:
        mount("tmpfs", root.layer, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=0755")
        (root.layer / "upper").mkdir()
        (root.layer / "work").mkdir()
        layers = f"lowerdir={image_root},upperdir={root.layer}/upper,workdir={root.layer}/work"
        try:
            mount("overlay", root.path, "overlay", MS_NODEV, f"{layers},metacopy=on")
        except EngineError:
            mount("overlay", root.path, "overlay", MS_NODEV, layers)  # a kernel without metacopy
        if chown_home:
            _chown_tree(root.path, HOME, *chown_home)
    except BaseException:
        unmount_root(where)
        raise
    return root


def own_tmp(root: Path) -> Path | None:
    """The directory /tmp of a mounted sandbox root, made (mode 1777) when the image has none, for
    binding onto /tmp; None when the image's /tmp is not a directory (a symlink: a bind would
    follow it on the host)."""
    path = root / "tmp"
    try:
        os.mkdir(path, 0o700)  # nothing runs in the sandbox yet: made, then opened up
        os.chmod(path, 0o1777)  # noqa: S103 - a /tmp: everyone's, sticky
    except FileExistsError:
        pass
    except OSError as e:
        raise EngineError(f"Could not make {path} ({e}).", _FIX) from None
    return path if stat.S_ISDIR(os.lstat(path).st_mode) else None


def unmount_root(where: Path) -> None:
    """Unmount a sandbox's root (the overlay first, then its tmpfs: that frees the pages the
    sandbox wrote) and remove its directories. Unmounted already is fine."""
    for path in (where / "rootfs", where / "layer"):
        umount(path)
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise EngineError(f"Could not remove {path} after unmounting it ({e}).", _FIX) from None


def mount_table() -> Iterator[tuple[str, str]]:
    """This process's mounts, in mount order: (mount point, file system type)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 is a space
            yield point, fields[fields.index("-") + 1]


def mounts_under(directory: Path) -> Iterator[Path]:
    """Mount points at or below `directory`, deepest first (the order to unmount them in)."""
    prefix = str(directory).rstrip("/") + "/"
    found = {Path(p) for p, _ in mount_table() if p.startswith(prefix) or p == prefix.rstrip("/")}
    yield from sorted(found, key=lambda p: len(p.parts), reverse=True)


def mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise EngineError(f"Could not mount {fstype} on {target}: {os.strerror(err)}.", _FIX)


def shared_point(path: Path) -> None:
    """Make the directory `path` (created) a mount point of its own with shared propagation: what
    is attached to it later shows in every sandbox that bound it in as a slave."""
    path.mkdir(parents=True)
    mount(str(path), path, "", MS_BIND, "")
    mount("none", path, "", MS_SHARED, "")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def attach(source: Path, target: Path, read_only: bool) -> None:
    """Bind `source` (and what is mounted below it) onto `target`, nosuid and nodev, and read-only
    when asked, from its first moment: a detached copy is made (open_tree), its flags set
    (mount_setattr), then it is attached (move_mount). So the copies a shared `target` propagates
    into sandboxes carry the same flags; a bind then a remount would leave them writable (a
    remount changes one mount, it does not propagate)."""

    def call(number: int, *args: object) -> int:
        result = int(_libc.syscall(number, *args))
        if result < 0:
            err = ctypes.get_errno()
            raise EngineError(f"Could not attach {source} on {target}: {os.strerror(err)}.", _FIX)
        return result

    fd = call(_OPEN_TREE, _AT_FDCWD, str(source).encode(), _OPEN_TREE_CLONE | _O_CLOEXEC | _AT_RECURSIVE)
    try:
        flags = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (_MOUNT_ATTR_RDONLY if read_only else 0)
        attr = _MountAttr(flags, 0, 0, 0)
        call(_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH | _AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
        call(_MOVE_MOUNT, fd, b"", _AT_FDCWD, str(target).encode(), _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(fd)


def umount(target: Path) -> None:
    """Detach `target` and everything below it; not mounted is fine."""
    while _libc.umount2(str(target).encode(), MNT_DETACH) == 0:
        pass  # stacked mounts: take them all
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOENT):
        raise EngineError(f"Could not unmount {target}: {os.strerror(err)}.", _FIX)


def read_inside(root: Path, path: str, limit: int = 1 << 20) -> str | None:
    """A file of an image read from the host without following any symlink in it (an image may
    point /etc/passwd at a host file): None when a part is a symlink, missing or not readable."""
    fd = _open_inside(root, path, os.O_RDONLY)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit).decode(errors="replace")


def _open_inside(root: Path, path: str, flags: int, create_last: bool = False) -> int | None:
    parts = [p for p in path.split("/") if p]
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and create_last:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            want = flags if last else os.O_RDONLY | os.O_DIRECTORY
            nxt = os.open(part, want | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError:
        os.close(fd)
        return None
    return fd


def _chown_tree(root: Path, top: str, uid: int, gid: int) -> None:
    """chown -R inside the sandbox's root, from the host, never following a symlink out of it:
    each step is relative to a directory descriptor, with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW."""
    fd = _open_inside(root, top, os.O_RDONLY | os.O_DIRECTORY, create_last=True)
    if fd is None:
        return  # a symlink or not a directory: the image's business, left as it is
    try:
        os.fchown(fd, uid, gid)
        for _, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            for name in dirs + files:
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(fd)
