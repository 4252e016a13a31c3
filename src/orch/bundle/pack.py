"""`orch publish`'s side: a directory packed as a deterministic gzip'd tar."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from orch.bundle.contents import file_mode
from orch.bundle.ignore import IGNORE_FILE
from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_FILES
from orch.bundle.tar_stream import Kind
from orch.bundle.walk import Item, walk
from orch.errors import InvalidInput
from orch.sizes import format_size

_BIGGEST_SHOWN = 3


@dataclass(frozen=True)
class BundleFile:
    """A file or link of a bundle; `link` is a link's target (relative to the link's directory)."""

    path: str
    size: int
    mode: int
    link: str | None = None


@dataclass(frozen=True)
class Bundle:
    """A packed bundle: the same tree always gives the same `data`, whatever its times and owners."""

    data: bytes
    sha256: str
    files: tuple[BundleFile, ...]
    skipped: tuple[str, ...] = ()  # what the skipping rules left out (directories end in '/')


def pack_directory(root: Path, max_bytes: int = MAX_BUNDLE_BYTES, what: str = "agent") -> Bundle:
    """Pack `root` as a bundle, refusing what the server would refuse before sending anything.
    `what` (agent, service) is what the bundle holds, for the sentences that say so."""
    tree = walk(root, MAX_FILES)
    # Parents before children, and the same order on every machine.
    items = sorted(tree.items, key=lambda item: item.path.split("/"))
    files = [item for item in items if item.kind is Kind.FILE]
    total = sum(item.size for item in files)
    if total > max_bytes:
        raise _too_big(root, total, max_bytes, files)
    if not any(item.kind is not Kind.DIRECTORY for item in items):
        raise InvalidInput(
            f"{root} has no files to publish.",
            f"Pass the directory that holds your {what}'s code; check what {IGNORE_FILE} leaves out.",
        )
    data, packed = _tar(root, items, max_bytes)
    return Bundle(data, hashlib.sha256(data).hexdigest(), packed, tuple(sorted(tree.skipped)))


def _tar(root: Path, items: list[Item], max_bytes: int) -> tuple[bytes, tuple[BundleFile, ...]]:
    buffer = io.BytesIO()
    packed: list[BundleFile] = []
    left = max_bytes
    # mtime=0 and no file name in the gzip header, and no times, owners or user names in the tar.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
    ):
        for item in items:
            info = tarfile.TarInfo(item.path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if item.kind is Kind.DIRECTORY:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif item.kind is Kind.LINK:
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, item.target
                tar.addfile(info)
                packed.append(BundleFile(item.path, 0, 0o777, item.target))
            else:
                content = _read(root, item, left, max_bytes)
                left -= len(content)
                info.size, info.mode = len(content), file_mode(item.mode)
                tar.addfile(info, io.BytesIO(content))
                packed.append(BundleFile(item.path, len(content), info.mode))
    return buffer.getvalue(), tuple(packed)


def _read(root: Path, item: Item, left: int, max_bytes: int) -> bytes:
    try:
        # O_NOFOLLOW: a file swapped for a link since the walk is refused, not followed out.
        fd = os.open(item.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            content = f.read(left + 1)
    except OSError as exc:
        raise InvalidInput(
            f"Can't read {item.path}: {exc.strerror}.",
            f"Fix its permissions, or list it in {IGNORE_FILE} to leave it out of the bundle.",
        ) from None
    if len(content) > left:  # it grew while we were packing
        raise InvalidInput(
            f"{root} grew past {format_size(max_bytes)} while it was being packed.", "Try again."
        )
    return content


def _too_big(root: Path, total: int, max_bytes: int, files: list[Item]) -> InvalidInput:
    biggest = sorted(files, key=lambda item: -item.size)[:_BIGGEST_SHOWN]
    shown = ", ".join(f"{item.path} ({format_size(item.size)})" for item in biggest)
    return InvalidInput(
        f"{root} holds {format_size(total)} of files, over the {format_size(max_bytes)} limit. "
        f"Biggest: {shown}.",
        f"List big files (data, models, build output) in {IGNORE_FILE} to leave them out of the bundle.",
    )
