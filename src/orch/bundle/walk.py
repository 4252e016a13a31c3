"""The entries `orch publish` takes from a directory, each checked as the server will check it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from orch.bundle.ignore import IGNORE_FILE, Rules
from orch.bundle.paths import path_problem, shown
from orch.bundle.tar_stream import Kind
from orch.errors import InvalidInput

_LEAVE_OUT = f"list it in {IGNORE_FILE} to leave it out of the bundle."
_SPECIAL = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass(frozen=True)
class Item:
    """One entry to pack: `source` is where it is on disk; `target` is a link's (relative) target."""

    path: str
    kind: Kind
    size: int
    mode: int
    source: Path
    target: str = ""


@dataclass(frozen=True)
class Tree:
    """The entries to pack, in no particular order, and the paths left out (directories end in '/')."""

    items: list[Item]
    skipped: list[str]


def walk(root: Path, max_files: int) -> Tree:
    """Every entry under `root` that the rules keep; a link out of `root` or an odd file is refused."""
    top = _top(root)
    rules = Rules.load(top)
    items: list[Item] = []
    skipped: list[str] = []
    pending = [("", top)]
    while pending:
        rel_dir, directory = pending.pop()
        for entry in _scan(directory, rel_dir or str(root)):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            source = Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if rules.skips_directory(rel, source):
                    skipped.append(rel + "/")
                    continue
                pending.append((rel, source))
                item = Item(rel, Kind.DIRECTORY, 0, 0o755, source)
            elif rules.skips_file(rel):
                skipped.append(rel)
                continue
            elif stat.S_ISLNK(info.st_mode):
                item = Item(rel, Kind.LINK, 0, 0o777, source, _link_target(top, root, rel, source))
            elif stat.S_ISREG(info.st_mode):
                item = Item(rel, Kind.FILE, info.st_size, info.st_mode & 0o777, source)
            else:
                what = _SPECIAL.get(stat.S_IFMT(info.st_mode), "not a regular file")
                raise InvalidInput(
                    f"{rel} is {what}; a bundle holds files, directories and links only.",
                    f"Remove it, or {_LEAVE_OUT}",
                )
            problem = path_problem(rel)
            if problem is not None:
                raise InvalidInput(f"{shown(rel)!r} {problem}.", f"Rename it, or {_LEAVE_OUT}")
            items.append(item)
            if len(items) > max_files:
                raise InvalidInput(
                    f"{root} has more than {max_files} files and directories to publish.",
                    f"List generated files, data and dependencies in {IGNORE_FILE}.",
                )
    return Tree(items, skipped)


def _top(root: Path) -> Path:
    if not root.exists():
        raise InvalidInput(f"{root} does not exist.", "Give the directory that holds your agent's code.")
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory.", "Give the directory that holds your agent's code.")
    # Real paths from here on: a link's target is judged against where the files really are.
    return Path(os.path.realpath(root))


def _scan(directory: Path, shown: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError as exc:
        raise InvalidInput(
            f"Can't read {shown}: {exc.strerror}.", f"Fix its permissions, or {_LEAVE_OUT}"
        ) from None


def _link_target(top: Path, root: Path, rel: str, source: Path) -> str:
    """The target of the link `rel`, relative to its directory, if it resolves inside `top`."""
    written = os.readlink(source)
    resolved = Path(os.path.realpath(source))
    if not resolved.is_relative_to(top):
        raise InvalidInput(
            # The directory as an absolute path: `outside .` then a full stop read as `..`.
            f"{rel} is a link to {written}, which is outside {os.path.abspath(root)}.",
            f"Replace the link with a copy of what it points to, or {_LEAVE_OUT}",
        )
    # Stored as the real path relative to the link's (real) directory: only leading '..' steps,
    # the one form the server accepts.
    target = os.path.relpath(resolved, source.parent)
    problem = path_problem(target)
    if problem is not None:
        raise InvalidInput(
            f"{shown(rel)} is a link to {shown(written)}, which {problem}.", f"Rename it, or {_LEAVE_OUT}"
        )
    return target
