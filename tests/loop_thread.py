"""asyncio.run in a thread of its own, for tests, bounded by a timeout. (It was first written
because CI's main thread was sometimes marked as running a loop: the browser tests' Playwright,
then open for the whole session. tests/conftest.py now fails a test that leaves one.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
    """asyncio.run(main()) in a new thread; its result, or what it raised, here."""
    done: list[T] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            done.append(asyncio.run(main()))
        except BaseException as e:  # handed to the test's thread
            failed.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive()
    if failed:
        raise failed[0]
    return done[0]
