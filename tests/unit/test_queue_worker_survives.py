"""A queue worker goes on after an exception out of one item's work (workers/queue.py): a thread
lost to it would be one worker fewer until the server's restart."""

from __future__ import annotations

import threading

from orch.workers.queue import QueueWorkers


def test_a_worker_survives_an_exception_from_its_work() -> None:
    items = ["boom", "fine"]
    done: list[str] = []
    finished = threading.Event()

    def claim() -> str | None:
        return items.pop(0) if items else None

    def work(item: str) -> None:
        if item == "boom":
            raise RuntimeError("the store's disk is full")
        done.append(item)
        finished.set()

    workers = QueueWorkers(
        "t", claim=claim, work=work, recover=lambda: None, wake=threading.Event(), count=1, poll=0.01
    )
    workers.start()
    try:
        assert finished.wait(30), "the worker ended with the exception"
        assert done == ["fine"]
        assert all(t.is_alive() for t in workers._threads)
    finally:
        workers.stop()
