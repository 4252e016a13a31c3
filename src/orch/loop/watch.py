"""The run's clock and cancel check, as the loop sees them: every wait (a model call, a pause
between retries) ends early at the run's deadline or at a cancel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from orch.loop.outcome import Stopped
from orch.models import RunStatus

T = TypeVar("T")
POLL = 0.05  # seconds between looks at the cancel check while waiting


def _never() -> bool:
    return False


@dataclass
class Watch:
    timeout: float | None = None  # the run's seconds of wall time; None: no limit
    should_stop: Callable[[], bool] = _never  # True once the run is cancelled
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float | None:
        """Seconds until the deadline (None: no deadline)."""
        return None if self.timeout is None else self.started + self.timeout - time.monotonic()

    def check(self) -> None:
        """Stopped when the run was cancelled or its time is up."""
        if self.should_stop():
            raise Stopped(RunStatus.CANCELLED, "cancelled while running")
        left = self.left()
        if left is not None and left <= 0:
            raise Stopped(RunStatus.TIMED_OUT, f"timed out after {self.timeout:g} s")

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (pause := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(pause, POLL))
        self.check()

    def wait(self, call: Callable[[], T]) -> T:
        """`call()`'s result, or Stopped at a cancel or the deadline. The call runs in a thread of
        its own: a blocking HTTP request cannot be interrupted here, so a stopped one is left
        behind and its answer dropped. Its own timeout does not bound it (an endpoint that
        trickles its answer restarts the read timeout with every byte): the loop closes the
        model when it ends, which ends the call and its thread at once (client.py)."""
        done = threading.Event()
        box: list[T] = []
        error: list[BaseException] = []

        def work() -> None:
            try:
                box.append(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                error.append(exc)
            finally:
                done.set()

        threading.Thread(target=work, name="orch-loop-call", daemon=True).start()
        while not done.wait(POLL):
            self.check()
        if error:
            raise error[0]
        return box[0]
