"""A tool's output kept within a limit: its beginning and its end (where an error usually is),
with the cut marked, collected as it comes so a flood never sits in memory.

Secrets are masked before anything is kept (a cut through a value would otherwise keep most of
it in clear, out of the masker's sight), and the cut never splits a `***` or a UTF-8 character:
each side of it ends a few bytes early rather than keep a piece of one."""

from __future__ import annotations

from collections.abc import Iterable

from orch.secret.mask import MASK, Redactor, off_mask

_SLACK = 3  # bytes kept beyond each side of the cut, to move it off a `***` or a character


class Clip:
    """Bytes handed in pieces (call it); `text()` is them all, or at most their first and last
    halves of `limit` bytes with `[... N bytes cut ...]` between. Each of `hidden` (a run's
    secret values) is kept as `***`."""

    def __init__(self, limit: int, hidden: Iterable[bytes] = ()) -> None:
        self.limit = limit
        self.half = limit // 2
        self.head = b""
        self.tail = b""
        self.size = 0  # bytes kept in all: after masking, before the cut
        values = [v for v in hidden if v]
        self._redactor = Redactor(values) if values else None

    def __call__(self, data: bytes) -> None:
        if self._redactor is not None:
            data = self._redactor.feed(data)
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        self.size += len(data)
        room = self.half + _SLACK - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail = (self.tail + data)[-(self.limit - self.half + _SLACK) :]

    def _ended(self) -> None:
        """What the masking held back (the end might have begun a value): the output has ended."""
        if self._redactor is not None:
            self._keep(self._redactor.close())

    @property
    def cut(self) -> bool:
        """Whether the output was longer than the limit."""
        return self.size > self.limit

    def data(self) -> bytes:
        """Everything, when nothing was cut."""
        self._ended()
        assert not self.cut
        return self.head + self.tail

    def text(self) -> str:
        self._ended()
        if not self.cut:
            return (self.head + self.tail).decode("utf-8", "replace")
        before, after = self.head, self.tail
        if len(before) + len(after) == self.size:  # nothing dropped yet: the cut is within what is kept
            before = after = before + after
        head = before[: _head_end(before, self.half)]
        tail = after[_tail_start(after, len(after) - (self.limit - self.half)) :]
        cut = self.size - len(head) - len(tail)
        return f"{head.decode('utf-8', 'replace')}\n{cut_marker(cut)}\n{tail.decode('utf-8', 'replace')}"


def head(data: bytes, limit: int) -> bytes:
    """Masked `data`, or its first `limit` bytes at most when it is longer: as a run's stdout is
    cut, ending before a `***` the cut would split (`…y`, never `…y*` or `…y**`) and on a
    character's start."""
    return data if len(data) <= limit else data[: _head_end(data, limit)]


def cut_marker(cut: int) -> str:
    return f"[... {cut} {'byte' if cut == 1 else 'bytes'} cut ...]"


def _head_end(data: bytes, at: int) -> int:
    """Where the head ends: at most `at`, before a `***` it would split, on a character's start."""
    if (end := off_mask(data, at)) != at:
        return end
    while end > max(0, at - 3) and _continues(data, end):
        end -= 1
    return end


def _tail_start(data: bytes, at: int) -> int:
    """Where the tail starts: at least `at`, after a `***` it would split, on a character's start."""
    if (start := off_mask(data, at)) != at:
        return start + len(MASK)
    while start < min(len(data), at + 3) and _continues(data, start):
        start += 1
    return start


def _continues(data: bytes, at: int) -> bool:
    """Whether the byte at `at` continues a UTF-8 character (a cut there would split it)."""
    return at < len(data) and data[at] & 0xC0 == 0x80


def clip(data: bytes, limit: int) -> str:
    kept = Clip(limit)
    kept(data)
    return kept.text()
