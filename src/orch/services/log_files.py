"""Reading a log that is still being written (a build's, a run's streams) from a byte offset, so
that a follower asks again from where the last answer ended: the piece of it to answer with."""

from __future__ import annotations


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
