"""A store that refuses for a while (errors.store_refused: its PostgreSQL server restarting or
out of reach, its disk full, a locked SQLite), as orch's background work meets it: said once in
the server's log while it lasts (`Outage`), a write asked again after each of PAUSES
(`ask_again`), and one the store still refuses then held in memory and asked again at each pass
of its queue (`Held`) until the store takes it (docs/architecture.md "A store that does not
answer"). Any other error is a bug's: raised as it came."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from orch.errors import store_full, store_refused, store_silent
from orch.store.db import first_line

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a write the store refused waits before it is asked again, one pause after each
# refusal: about 2.5 minutes in all, then its caller holds it (`Held`) or gives up.
PAUSES: tuple[float, ...] = (1, 2, 4, 8, 15, 30, 30, 30, 30)


def said(exc: BaseException) -> str:
    """What a refusing store said, as one clause: for the server's log."""
    return "its disk is full" if store_full(exc) else first_line(store_refused(exc) or exc)


class Outage:
    """What a piece of work that asks the store again and again (a queue's claim, a run's cancel
    check) logs while the store refuses it: one WARNING line, without a traceback, when it starts
    refusing, and one INFO line when it answers again, however many asks (and threads) fail
    between. Found by a tester: each failed pass of each worker logged its traceback, 169 of them
    in 14 s. Any other error is a bug: its caller logs its traceback."""

    def __init__(self, doing: str, logger: logging.Logger, meanwhile: str = "tried again each pass") -> None:
        self.doing = doing  # what failed, as the log says it: "claiming from the run queue"
        self.meanwhile = meanwhile  # what happens until it answers
        self.log = logger
        self.since: float | None = None  # time.monotonic() of the first refusal not yet answered
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> bool:
        """Whether `exc` is the store refusing (logged once until it answers again); False for
        any other error."""
        if store_refused(exc) is None:
            return False
        with self._lock:
            if self.since is not None:
                return True
            self.since = time.monotonic()
        how = "does not answer" if store_silent(exc) is not None else "refused"
        self.log.warning(
            "%s failed: the store %s (%s); %s, without a line more until it answers.",
            self.doing,
            how,
            said(exc),
            self.meanwhile,
        )
        return True

    def ask(self, read: Callable[[], T], otherwise: T) -> T:
        """`read()`, asked of the store by something that goes on without its answer (a cancel
        check, a build's progress, a sandbox's last use): a refusal is `failed`'s (one line while
        it lasts) and gives `otherwise`; an answer is `answered`; any other error is raised."""
        try:
            found = read()
        except Exception as e:
            if not self.failed(e):
                raise
            return otherwise
        self.answered()
        return found

    @contextmanager
    def watching(self, bug: str, *args: object) -> Iterator[None]:
        """One pass of a loop that asks the store: a refusal is `failed`'s (one line while it
        lasts), a pass that ends well is `answered`; any other error is a bug, logged with its
        traceback (`bug` % `args`) and not raised: the loop goes on."""
        try:
            yield
        except Exception as e:
            if not self.failed(e):
                self.log.exception(bug, *args)
        else:
            self.answered()

    def answered(self) -> None:
        """The store answered: said once if it did not before."""
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            down, self.since = time.monotonic() - self.since, None
        self.log.info("%s: the store answers again (after %.0f s).", self.doing, down)


class Refused(Exception):
    """The store refused a write after every pause (`ask_again`); the last refusal is its cause."""


class Stopped(Exception):
    """The server began to stop while a write waited to be asked again; the refusal is its cause."""


def ask_again(write: Callable[[], T], doing: str, logger: logging.Logger, stopping: threading.Event) -> T:
    """`write()`'s answer; a store that refuses it is asked again after each of PAUSES, a line in
    `logger` each time. Refused once more after the last: `Refused`. The server stopping (now or
    during a pause): `Stopped`, at once. Any other error is raised as it came. A write taken
    after a refusal is said too, so that the log's last word on it is not "trying again"."""
    since = None
    for pause in (*PAUSES, None):
        try:
            answer = write()
        except Exception as e:
            if store_refused(e) is None:
                raise
            if pause is None:
                raise Refused(f"{doing}: the store refused it every time ({said(e)})") from e
            if stopping.is_set():
                raise Stopped(f"{doing}: the server is stopping ({said(e)})") from e
            logger.warning(
                "%s failed: the store refused it (%s); trying again in %g s", doing, said(e), pause
            )
            since = time.monotonic() if since is None else since
            if stopping.wait(pause):
                raise Stopped(f"{doing}: the server is stopping ({said(e)})") from e
        else:
            if since is not None:
                logger.info("%s: done, the store took it (after %.0f s)", doing, time.monotonic() - since)
            return answer
    raise AssertionError("unreachable")


class Held(Generic[T]):
    """What the store refused past PAUSES, by key, in the order held: kept in memory only (a stop
    leaves it to the next start's recovery), asked again by `settle` at each pass of its queue."""

    def __init__(self) -> None:
        self.items: dict[str, T] = {}
        self.lock = threading.Lock()  # guards `items` (and a subclass's counts)
        self._asking = threading.Lock()  # held by the one pass that asks the store
        self._next_ask = 0.0

    def hold(self, key: str, item: T) -> bool:
        """Keep `item` to be asked again; whether it is kept."""
        with self.lock:
            self.items[key] = item
        return True

    def done(self, key: str) -> None:
        with self.lock:
            self.items.pop(key, None)

    def settle(
        self,
        write: Callable[[str, T], None],
        stopping: threading.Event,
        bug: Callable[[str, T], None],
        every: float = 0.0,
    ) -> int:
        """Ask the store again for each held item (`write`), in the order held, by one pass at a
        time and at most once every `every` seconds; how many it took. The first refusal ends the
        pass: the others wait with it. An item whose write fails otherwise (a bug: `bug` logs it)
        is dropped, left to the next start's recovery. None is asked once the server is stopping."""
        if not self.items or stopping.is_set() or time.monotonic() < self._next_ask:
            return 0
        if not self._asking.acquire(blocking=False):
            return 0
        settled = 0
        try:
            self._next_ask = time.monotonic() + every
            with self.lock:
                items = list(self.items.items())
            for key, item in items:
                if stopping.is_set():
                    break
                try:
                    write(key, item)
                except Exception as e:  # noqa: BLE001 - a bug's is `bug`'s to log
                    if store_refused(e) is not None:
                        break  # the store still refuses: the others wait with it
                    bug(key, item)
                else:
                    settled += 1
                self.done(key)
        finally:
            self._asking.release()
        return settled


# How many times one item under way (a deployment, a build) is queued again for a store that
# refused it; refused once more, it fails (a store that refuses it each time is not a blip).
REQUEUES = 3


class Writes(Held[tuple[str, Callable[[], None]]]):
    """The writes that end a queue's items (a deployment or a build queued again, or failed),
    by item: each asked again after each of PAUSES (`write`), held past them and asked at each
    pass of the queue (`settle_writes`); and how many times each item under way was queued
    again for a refusing store (`requeue`)."""

    def __init__(self, noun: str, logger: logging.Logger) -> None:
        super().__init__()
        self.noun, self.log = noun, logger  # "deployment": what the log lines name
        self.requeued: dict[str, int] = {}  # guarded by `lock`

    def write(self, key: str, what: str, write: Callable[[], None], stopping: threading.Event) -> None:
        """`write` (`what`: "queue it again", "record its failure"); a store that refuses it is
        asked again after each of PAUSES, then it is held for `settle_writes`. Once `stopping`
        is set, it is asked no more: the item stays claimed by this server, whose next start
        settles it."""
        try:
            ask_again(write, f"{self.noun} {key}: asking the store to {what}", self.log, stopping)
        except Stopped as e:
            self.log.warning("%s; the next start settles %s %s", e, self.noun, key)
        except Refused as e:
            self.hold(key, (what, write))
            self.log.warning("%s; asked again until it takes it", e)

    def settle_writes(self, stopping: threading.Event) -> int:
        """Ask the store again for the writes it refused past PAUSES; how many it took."""

        def write(key: str, held: tuple[str, Callable[[], None]]) -> None:
            what, asking = held
            asking()
            self.log.info(
                "%s %s: the store answers again; it took what it refused (%s)", self.noun, key, what
            )

        def bug(key: str, held: tuple[str, Callable[[], None]]) -> None:  # left to the next start
            self.log.exception("%s %s: asking the store again to %s failed", self.noun, key, held[0])

        return self.settle(write, stopping, bug)

    def requeue(self, key: str) -> int | None:
        """One more queueing again of `key` for a refusing store: how many there were, with this
        one; None once REQUEUES were (the item fails, and its count is forgotten)."""
        with self.lock:
            times = self.requeued.get(key, 0)
            if times < REQUEUES:
                self.requeued[key] = times + 1
                return times + 1
            self.requeued.pop(key, None)
            return None

    def ended(self, key: str) -> None:
        """`key` ended (ready or failed): its count of queueings again is forgotten."""
        with self.lock:
            self.requeued.pop(key, None)
