"""The secret masker before 2026-12-07 (src/orch/secret/mask.py's `Redactor` then), kept as the
reference of what masking gives: tests/unit/test_secret_mask_cost.py checks the masker against
it, bench/mask.py times the two side by side. Its held-back tail was quadratic in a value's
length."""

from __future__ import annotations

from collections.abc import Iterable

from orch.secret.mask import MASK


class OldRedactor:
    """The masker before, as the reference of what masking gives: the same `feed`, `close` and
    `held`, in time quadratic in a value's length."""

    def __init__(self, values: Iterable[bytes]) -> None:
        self.values = sorted({v for v in values if v}, key=len, reverse=True)
        self._pending = b""
        self._covered = 0

    @property
    def held(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> bytes:
        if not self.values:
            return data
        self._pending += data
        return self._release(final=False)

    def close(self) -> bytes:
        if not self.values:
            return b""
        out = self._release(final=True)
        self._covered = 0
        return out

    def _release(self, final: bool) -> bytes:
        buf = self._pending
        cut = len(buf) if final else self._safe_end(buf)
        out = bytearray()
        nexts = [-2] * len(self.values)

        def first_from(pos: int) -> tuple[int, int]:
            best, length = -1, 0
            for i, value in enumerate(self.values):
                found = nexts[i]
                if found == -2 or (found != -1 and found < pos):
                    found = buf.find(value, pos, cut + len(value) - 1)
                    nexts[i] = found
                if found != -1 and (best == -1 or found < best or (found == best and len(value) > length)):
                    best, length = found, len(value)
            return best, length

        pos, covered = 0, self._covered
        while pos < cut:
            start, length = first_from(pos)
            if pos < covered:
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
