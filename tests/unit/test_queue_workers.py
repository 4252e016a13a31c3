"""The queue workers' wake-ups (workers/queue.py): one queued item wakes one idle worker (which
wakes the next after its claim), not all of them at once; queued items are all taken without
waiting for a poll; and the workers stop promptly."""

from __future__ import annotations

import threading
import time

from orch.workers.queue import QueueWorkers


class Queue:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.claims = 0
        self.done: list[str] = []
        self.lock = threading.Lock()

    def claim(self) -> str | None:
        with self.lock:
            self.claims += 1
            return self.items.pop(0) if self.items else None

    def work(self, item: str) -> None:
        time.sleep(0.05)
        with self.lock:
            self.done.append(item)


def workers(queue: Queue, wake: threading.Event, count: int) -> QueueWorkers:
    # A poll far longer than the test: only wake-ups can explain what happens.
    return QueueWorkers(
        "t", claim=queue.claim, work=queue.work, recover=lambda: None, wake=wake, count=count, poll=60
    )


def settle(queue: Queue, done: int) -> None:
    deadline = time.monotonic() + 10
    while len(queue.done) < done:
        assert time.monotonic() < deadline, queue.done
        time.sleep(0.01)
    time.sleep(0.2)  # any further claim it caused has happened by now


def test_one_item_wakes_one_worker_not_all() -> None:
    queue, wake = Queue(), threading.Event()
    w = workers(queue, wake, count=8)
    w.start()
    try:
        time.sleep(0.2)  # all eight idle, after their first look
        assert queue.claims == 8
        queue.items.append("a")
        wake.set()
        settle(queue, 1)
        # The woken one claims "a" and wakes the next, who finds nothing; done with "a", it looks
        # once more: three claims. (Every idle worker woken at once: eight, then one more.)
        assert queue.done == ["a"] and queue.claims == 8 + 3
    finally:
        w.stop()


def test_a_burst_is_taken_by_every_worker_without_a_poll() -> None:
    queue, wake = Queue(), threading.Event()
    w = workers(queue, wake, count=4)
    w.start()
    try:
        time.sleep(0.2)
        queue.items += [str(i) for i in range(20)]
        began = time.monotonic()
        wake.set()
        settle(queue, 20)
        # Four at a time, 50 ms each: about 0.25 s; one at a time would be 1 s.
        assert sorted(queue.done, key=int) == [str(i) for i in range(20)]
        assert time.monotonic() - began < 0.9
    finally:
        w.stop()


def test_stop_ends_every_worker_promptly() -> None:
    queue, wake = Queue(), threading.Event()
    w = workers(queue, wake, count=8)
    w.start()
    time.sleep(0.1)
    began = time.monotonic()
    w.stop()
    assert time.monotonic() - began < 2
    assert not any(t.is_alive() for t in w._threads)
