"""Masking secrets' values in output that arrives in pieces (a run's stdout, stderr and log).

`Redactor.feed` takes the next piece and returns what may be stored now: every occurrence of a
value replaced by `***`, even one split across two pieces. To see a split one, it holds back the
end of a piece that could be the start of a value (at most the longest value's length less one
byte, and only that much when the piece really ends with the start of one); `close` returns what
it held. Occurrences that overlap (of one value or of several) become one `***`; two that merely
touch stay two.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = b"***"


class Redactor:
    def __init__(self, values: Iterable[bytes]) -> None:
        self.values = sorted({v for v in values if v}, key=len, reverse=True)
        self._pending = b""  # what was fed but not yet returned
        self._covered = 0  # how many bytes at the start of _pending lie in a `***` already returned

    @property
    def held(self) -> int:
        """How many bytes are held back now."""
        return len(self._pending)

    def feed(self, data: bytes) -> bytes:
        if not self.values:
            return data
        self._pending += data
        return self._release(final=False)

    def close(self) -> bytes:
        """What is still held back, masked: the stream has ended."""
        if not self.values:
            return b""
        out = self._release(final=True)
        self._covered = 0
        return out

    def _release(self, final: bool) -> bytes:
        buf = self._pending
        cut = len(buf) if final else self._safe_end(buf)
        out = bytearray()
        nexts = _Occurrences(buf, self.values, cut)
        pos, covered = 0, self._covered
        while pos < cut:
            start, length = nexts.first_from(pos)
            if pos < covered:  # inside a `***` already given: overlapping occurrences extend it
                if start != -1 and start < covered:
                    covered = max(covered, start + length)
                    pos = start + 1
                else:
                    pos = min(covered, cut)
                continue
            if start == -1:
                out += buf[pos:cut]
                pos = cut
            else:
                out += buf[pos:start]
                out += MASK
                covered = start + length
                pos = start + 1
        self._pending = buf[pos:]
        self._covered = max(0, covered - pos)
        return bytes(out)

    def _safe_end(self, buf: bytes) -> int:
        """Where the part of `buf` that may begin a value split off into the next piece starts:
        the earliest position whose rest of `buf` is the beginning of a value but not all of it.
        Every occurrence that starts before it is whole in `buf`."""
        size = end = len(buf)
        for value in self.values:
            first = value[:1]
            p = max(0, size - len(value) + 1)
            while (p := buf.find(first, p)) != -1:
                if value.startswith(buf[p:]):
                    end = min(end, p)
                    break
                p += 1
        return end


class _Occurrences:
    """The first occurrence of any value at or after a position (each value's next occurrence is
    remembered, so a pass over a buffer finds each one once), among those that start before `cut`."""

    def __init__(self, buf: bytes, values: list[bytes], cut: int) -> None:
        self.buf, self.values, self.cut = buf, values, cut
        self.nexts = [-2] * len(values)  # -2: not looked for yet; -1: none left

    def first_from(self, pos: int) -> tuple[int, int]:
        """(start, length of the longest value there) of the first occurrence at or after `pos`
        that starts before the cut; (-1, 0) when there is none."""
        best, length = -1, 0
        for i, value in enumerate(self.values):
            found = self.nexts[i]
            if found == -2 or (found != -1 and found < pos):
                found = self.buf.find(value, pos, self.cut + len(value) - 1)
                self.nexts[i] = found
            if found != -1 and (best == -1 or found < best or (found == best and len(value) > length)):
                best, length = found, len(value)
        return best, length


def redact(text: bytes, values: Iterable[bytes]) -> bytes:
    """`text` with every value masked, at once."""
    redactor = Redactor(values)
    return redactor.feed(text) + redactor.close()


class Mask:
    """One run's secret values, masked in text that is stored whole (a run's reason, an event's
    field: `mask(text)`) or that arrives in pieces (`redactor()`), so that everything stored for
    the run hides the same values the same way."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = [v.encode() for v in values if v]

    def __bool__(self) -> bool:
        return bool(self.values)

    def __call__(self, text: str) -> str:
        if not self.values:
            return text
        # A lone surrogate (which no UTF-8 text holds) must not make masking fail: it goes through
        # as bytes and comes back as U+FFFD.
        return redact(text.encode("utf-8", "surrogatepass"), self.values).decode("utf-8", "replace")

    def redactor(self) -> Redactor:
        return Redactor(self.values)
