"""Writing a checked bundle to disk without ever following a link."""

from __future__ import annotations

import os
from pathlib import Path

from orch.bundle.contents import read_contents
from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_FILES
from orch.errors import InvalidInput

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def extract_bundle(
    data: bytes, dest: Path, max_bytes: int = MAX_BUNDLE_BYTES, max_files: int = MAX_FILES
) -> list[str]:
    """Unpack `data` into `dest` (new or empty) and return the paths of its files and links.

    The whole bundle is checked before the first write, so a refused bundle leaves nothing behind.
    Links are made last: no file is written while any link of the bundle exists.
    """
    contents = read_contents(data, max_bytes, max_files)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise InvalidInput(
            f"Can't unpack the bundle into {dest}: it is not empty.", "Unpack into a new directory."
        )
    top = os.open(dest, _DIR_FLAGS & ~os.O_NOFOLLOW)  # `dest` is the caller's choice and may be a link
    try:
        for path in sorted(contents.directories, key=lambda p: p.count("/")):
            os.close(_directory(top, path.split("/")))
        for path, content in contents.files.items():
            *parents, name = path.split("/")
            parent = _directory(top, parents)
            try:
                _write(parent, name, content, contents.modes[path])
            finally:
                os.close(parent)
        for path, target in contents.links.items():
            *parents, name = path.split("/")
            parent = _directory(top, parents)
            try:
                os.symlink(target, name, dir_fd=parent)
            finally:
                os.close(parent)
    finally:
        os.close(top)
    return sorted([*contents.files, *contents.links])


def _directory(top: int, parts: list[str]) -> int:
    """A descriptor of the directory `parts` under `top`, made (mode 0755) where missing."""
    fd = os.dup(top)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                made = True
            except FileExistsError:
                made = False
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
            if made:
                os.fchmod(fd, 0o755)  # mkdir's mode is cut by the umask
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write(parent: int, name: str, content: bytes, mode: int) -> None:
    fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
