"""What a bundle holds, read in memory and checked as a whole before anything uses it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_FILES
from orch.bundle.paths import entry_path, link_target
from orch.bundle.tar_stream import FIX_REPACK, Kind, entries
from orch.errors import InvalidInput

_MAX_HOPS = 40  # links followed in one lookup, as Linux allows


def file_mode(mode: int) -> int:
    """The only two modes a bundle's files get: executable by all, or readable by all."""
    return 0o755 if mode & 0o111 else 0o644


@dataclass(frozen=True)
class Contents:
    """Files (content and mode), links (normal targets) and directories, by normal path."""

    files: dict[str, bytes]
    modes: dict[str, int]
    links: dict[str, str]
    directories: frozenset[str]

    def readable(self) -> dict[str, bytes]:
        """Path -> content of every file, and of every link that leads to a file of the bundle."""
        found = dict(self.files)
        for path in self.links:
            target = self.resolve(path)
            if target is not None and target in self.files:
                found[path] = self.files[target]
        return dict(sorted(found.items()))

    def resolve(self, path: str) -> str | None:
        """The path `path` leads to once its links are followed; None for a loop or an escape."""
        resolved: list[str] = []
        pending = deque(path.split("/"))
        hops = 0
        while pending:
            part = pending.popleft()
            if part == "..":
                if not resolved:
                    return None
                resolved.pop()
                continue
            if part in ("", "."):
                continue
            candidate = "/".join([*resolved, part])
            if candidate in self.links:
                hops += 1
                if hops > _MAX_HOPS:
                    return None
                # The target is relative to the link's directory, which is `resolved` as it stands.
                pending.extendleft(reversed(self.links[candidate].split("/")))
                continue
            resolved.append(part)
        return "/".join(resolved)


def read_contents(data: bytes, max_bytes: int = MAX_BUNDLE_BYTES, max_files: int = MAX_FILES) -> Contents:
    """The checked contents of the bundle `data`; any unsafe or malformed entry is an InvalidInput."""
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    links: dict[str, str] = {}
    directories: set[str] = set()
    for entry in entries(data, max_bytes, max_files):
        path = entry_path(entry.name)
        if not path and entry.kind is Kind.DIRECTORY:
            continue  # `./`, the top itself
        if not path:
            raise InvalidInput(f"The bundle has a {entry.kind} without a name.", FIX_REPACK)
        if path in files or path in links or path in directories:
            raise InvalidInput(f"The bundle has {path} twice.", FIX_REPACK)
        if entry.kind is Kind.FILE:
            files[path] = entry.data
            modes[path] = file_mode(entry.mode)
        elif entry.kind is Kind.LINK:
            links[path] = link_target(path, entry.target)
        else:
            directories.add(path)
    _check_nesting([*files, *links, *directories], files, links)
    if not files and not links:
        raise InvalidInput(
            "The bundle holds no files.", "Publish a directory that has your agent's code in it."
        )
    return Contents(files, modes, links, frozenset(directories))


def _check_nesting(paths: list[str], files: dict[str, bytes], links: dict[str, str]) -> None:
    """Refuse entries under a file, and entries under a link (writing them would go through it)."""
    for path in paths:
        slash = path.find("/")
        while slash != -1:
            parent = path[:slash]
            if parent in links:
                raise InvalidInput(
                    f"The bundle's entry {path} is inside {parent}, which is a link.", FIX_REPACK
                )
            if parent in files:
                raise InvalidInput(
                    f"The bundle's entry {path} is inside {parent}, which is a file.", FIX_REPACK
                )
            slash = path.find("/", slash + 1)


def read_bundle(
    data: bytes, max_bytes: int = MAX_BUNDLE_BYTES, max_files: int = MAX_FILES
) -> dict[str, bytes]:
    """Path -> content of the bundle's files (links to files included), read safely in memory."""
    return read_contents(data, max_bytes, max_files).readable()
