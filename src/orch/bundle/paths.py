"""What a path in a bundle may look like, and where a link in it may point."""

from __future__ import annotations

from orch.bundle.tar_stream import FIX_REPACK
from orch.errors import InvalidInput

MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255  # one path component, as Linux allows


SHOWN_CHARS = 120  # of a refused path quoted in a message: its start and end, enough to find it


def shown(path: str) -> str:
    """`path` for a message: one longer than SHOWN_CHARS cut to its start and end (a refused path
    may be kilobytes long, and the sentence must stay one to read)."""
    if len(path) <= SHOWN_CHARS:
        return path
    half = SHOWN_CHARS // 2
    return f"{path[:half]}…{path[-half:]}"


def path_problem(path: str) -> str | None:
    """Why `path` (relative, '/'-separated) can't be a bundle path, or None if it can."""
    if "\\" in path:
        # A Windows tool reads a backslash as a separator, so `..\\x` would climb out there.
        return "has a backslash in its name"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "has a control character in its name"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "has a name that is not valid UTF-8"
    if len(encoded) > MAX_PATH_BYTES:
        return f"has a path longer than {MAX_PATH_BYTES} bytes"
    if any(len(part.encode()) > MAX_NAME_BYTES for part in path.split("/")):
        return f"has a name longer than {MAX_NAME_BYTES} bytes"
    return None


def entry_path(raw: bytes) -> str:
    """The normal form of an entry's name (`./a//b/` is `a/b`; the top itself is ``)."""
    name = _decode(raw, "An entry's name")
    if name.startswith("/"):
        raise InvalidInput(f"The bundle's entry {shown(name)} has an absolute path.", FIX_REPACK)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(
            f"The bundle's entry {shown(name)} climbs out of the bundle with '..'.", FIX_REPACK
        )
    path = "/".join(parts)
    problem = path_problem(path)
    if problem is not None:
        raise InvalidInput(f"The bundle's entry {shown(path)!r} {problem}.", FIX_REPACK)
    return path


def link_target(path: str, raw: bytes) -> str:
    """The normal form of the target of the link at `path`, if it stays inside the bundle.

    Only leading '..' steps are allowed: every link then starts from a real directory (no entry
    sits under a link), climbs at most to the top, and descends by names, which may be links of
    the same kind. So no chain of links leads out, whatever the order they are followed in. A
    '..' after a name could undo a link (`self -> .` then `x -> self/..`), so it is refused.
    """
    target = _decode(raw, f"The target of the link {path}")
    parts = [part for part in target.split("/") if part not in ("", ".")]
    ups = next((i for i, part in enumerate(parts) if part != ".."), len(parts))
    outside = (
        not target
        or target.startswith("/")
        or ".." in parts[ups:]
        or ups > path.count("/")
        or path_problem(target) is not None
    )
    if outside:
        raise InvalidInput(
            f"The bundle's link {shown(path)} points to {shown(target)!r}, outside the bundle.",
            "Links in a bundle must point to files or directories inside it. " + FIX_REPACK,
        )
    return "/".join(parts) or "."


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "replace")
        raise InvalidInput(f"{what} is not valid UTF-8: {shown!r}.", FIX_REPACK) from None
