"""Reading a log file that is still being written (a build's, a run's streams) from a byte offset,
so that a follower asks again from where the last answer ended."""

from __future__ import annotations

from pathlib import Path


def read_from(path: Path, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes of `path` from byte `offset`, and the file's size now; nothing (and
    size 0) when the file does not exist yet."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            # Past the end there is nothing yet (and seek() fails on offsets over 2**63).
            f.seek(max(min(offset, size), 0))
            return f.read(limit), size
    except FileNotFoundError:
        return b"", 0


def whole_characters(data: bytes) -> bytes:
    """`data` without a UTF-8 character cut at its end: the next read, from the offset returned,
    starts with it, so no character is read in halves (and mangled)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: nothing cut
            return data
        if byte >= 0xC0:  # the first byte of a character of 2, 3 or 4 bytes
            length = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= length else data[:-back]
    return data
