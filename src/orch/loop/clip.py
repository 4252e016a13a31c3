"""A tool's output kept within a limit: its beginning and its end (where an error usually is),
with the cut marked, collected as it comes so a flood never sits in memory."""

from __future__ import annotations


class Clip:
    """Bytes handed in pieces (call it); `text()` is them all, or their first and last halves of
    `limit` bytes with `[... N bytes cut ...]` between."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = b""
        self.tail = b""
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.size += len(data)
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail = (self.tail + data)[-(self.limit - self.limit // 2) :]

    @property
    def cut(self) -> int:
        """Bytes left out."""
        return self.size - len(self.head) - len(self.tail)

    def data(self) -> bytes:
        """Everything, when nothing was cut."""
        assert not self.cut
        return self.head + self.tail

    def text(self) -> str:
        if not self.cut:
            return self.data().decode("utf-8", "replace")
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        return f"{head}\n[... {self.cut} bytes cut ...]\n{tail}"


def clip(data: bytes, limit: int) -> str:
    kept = Clip(limit)
    kept(data)
    return kept.text()
