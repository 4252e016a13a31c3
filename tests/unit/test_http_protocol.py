"""The server's connections send the writes of one turn of the event loop as one."""

from __future__ import annotations

import asyncio
from typing import Any

from orch.server.http_protocol import CoalescingTransport
from tests.loop_thread import run_loop


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 1)}.get(name, default)


def test_the_writes_of_one_turn_leave_together_and_nothing_waits_longer() -> None:
    async def main() -> None:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        t.write(memoryview(b"body"))
        t.write(b"")
        assert fake.writes == [] and t.get_write_buffer_size() == 7 + 38 + 4
        await asyncio.sleep(0)
        assert fake.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"]
        t.write(b"data: 1\n\n")  # a stream's next chunk: at the end of this turn, alone
        await asyncio.sleep(0)
        assert fake.writes[1:] == [b"data: 1\n\n"]
        assert t.get_extra_info("sockname") == ("127.0.0.1", 1)  # the rest is the transport's

    run_loop(main)


def test_close_and_eof_send_what_was_written_first() -> None:
    async def main() -> None:
        fake = FakeTransport()
        t = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"last")
        t.close()
        assert (fake.writes, fake.closed) == ([b"last"], True)
        t.write(b"after close")
        await asyncio.sleep(0)
        assert fake.writes == [b"last"]  # dropped, as a closed transport drops it
        other = FakeTransport()
        t = CoalescingTransport(other, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.writelines([b"a", b"b"])
        t.write_eof()
        assert (other.writes, other.eof) == ([b"ab"], True)

    run_loop(main)
