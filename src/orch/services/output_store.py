"""Output on its way into the store: what a run or a build writes waits in memory for a moment,
then the platform's flusher stores every writer's waiting pieces in one transaction, so a chatty
writer costs the store one transaction per FLUSH_DELAY, not one per write, and every writer's
pieces share it (run_output.py, build_output.py).

    Pending     a writer's pieces from byte offsets, bounded per stream; `store(s)` adds what waits
                to a transaction of the caller's (a run's end stores its rest with its status),
                and gives it back to wait again if that transaction does not commit
    flusher(p)  the platform's flusher: one thread while there is something to store
    joined(...) what a reader gets from its offset: the pieces stored without a gap from there
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from orch.errors import store_refused
from orch.kept import kept
from orch.services.platform import Platform
from orch.store.db import first_line

log = logging.getLogger(__name__)

# How long a piece of output waits for more before it is stored.
FLUSH_DELAY = 0.05
_IDLE = 5.0  # seconds with nothing to store before the flusher's thread ends (the next write starts it)


@dataclass
class Taken:
    """Pieces on their way to the store: (stream, start, data), and whether a stream was cut at
    its bound meanwhile."""

    pieces: list[tuple[str, int, bytearray]]
    cut: bool

    def __bool__(self) -> bool:
        return bool(self.pieces or self.cut)


class Pending(ABC):
    """One writer's streams: `keep` is called from the writer's threads; what is kept waits in
    memory until the platform's flusher, or the writer's `store`, stores it. Each stream is kept up
    to `bound` bytes; past it, the rest is dropped and the cut is stored (`add` says how)."""

    def __init__(self, platform: Platform, sizes: dict[str, int], bound: int) -> None:
        self.platform = platform
        self.sizes = sizes  # bytes kept of each stream so far (stored or waiting)
        self.bound = bound
        self._pending: list[tuple[str, int, bytearray]] = []
        self._cut = False  # a stream reached its bound since the last store
        # Streams cut at their bound: nothing more of them is kept, even when the cut ended a
        # byte or two early (`cut_at`), since what came after the cut was never written there.
        self._full: set[str] = set()
        self._lock = threading.Lock()  # guards the three above
        # Held from taking the waiting pieces to their commit, so pieces are stored in order: a
        # reader never sees a later piece before an earlier one.
        self.storing = threading.Lock()

    @abstractmethod
    def add(self, s: Session, taken: Taken) -> None:
        """Add `taken`'s rows to `s` (and record a cut): each writer's own table."""

    def stored(self) -> None:  # noqa: B027  # a hook; a build log wakes no reader
        """Called once what was taken is committed (to wake readers)."""

    def cut_at(self, stream: str, data: bytes, room: int) -> int:
        """Where `data` is cut when only `room` bytes of it fit: there, unless a writer knows
        better (a run's masked output ends before a `***` it would split)."""
        return room

    def exhausted(self, stream: str) -> bool:
        """Whether `stream` keeps nothing more: it was cut, or it reached its bound."""
        return stream in self._full or self.sizes[stream] >= self.bound

    def keep(self, stream: str, data: bytes) -> bool:
        """Keep `data` at the end of `stream`, as much of it as its bound leaves room for; whether
        any of it was kept. What is kept of a stream is always the beginning of what it was
        given: once it is cut, the rest is dropped, however much room the cut left."""
        if not data:
            return False
        with self._lock:
            if stream in self._full:
                return False
            start = self.sizes[stream]
            room = self.bound - start
            if len(data) > room:
                self._cut = True
                self._full.add(stream)
                data = data[: self.cut_at(stream, data, max(room, 0))]
                if not data:
                    return False
            self.sizes[stream] = start + len(data)
            last = self._pending[-1] if self._pending else None
            if last is not None and last[0] == stream and last[1] + len(last[2]) == start:
                last[2].extend(data)  # one row for what came in a row
            else:
                self._pending.append((stream, start, bytearray(data)))
        flusher(self.platform).want(self)
        return True

    def take(self) -> Taken:
        """The waiting pieces, no longer waiting (the caller holds `storing` until they are
        stored, or gives them back)."""
        with self._lock:
            taken = Taken(self._pending, self._cut)
            self._pending, self._cut = [], False
        return taken

    def give_back(self, taken: Taken) -> None:
        """Pieces whose store failed, waiting again before anything kept since."""
        with self._lock:
            self._pending[:0] = taken.pieces
            self._cut = self._cut or taken.cut

    def store(self, s: Session) -> bool:
        """Add the waiting pieces to `s` (the caller holds `storing` until `s` commits); whether
        there were any. If `s`'s transaction ends without committing (the caller's other writes
        failed, or the store refused the commit: a locked SQLite, a PostgreSQL restart), the
        pieces wait again, before anything kept since, for the next store: the caller's next
        try, the writer's `close`, or the flusher's pass that what is kept next asks for."""
        taken = self.take()
        if taken:
            _given_back_unless_committed(s, self, taken)
        self.add(s, taken)
        return bool(taken)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session of the store whose transaction stores what waits too, `storing` held until
        it commits: whoever sees what the caller records there reads this output with it."""
        with self.storing, self.platform.store.session() as s:
            self.store(s)
            yield s

    def close(self) -> None:
        """Store what is left now (nothing left: no transaction). A store that refuses it for a
        moment (errors.store_refused: a locked SQLite, a PostgreSQL restart) has the pieces wait
        again, for the platform's flusher to store once the store takes writes again; the error
        is raised still, for the caller to say."""
        with self.storing:
            taken = self.take()
            if taken:
                try:
                    with self.platform.store.session() as s:
                        self.add(s, taken)
                except Exception as e:
                    if store_refused(e) is None:  # a bug: raised as it came
                        raise
                    self.give_back(taken)
                    flusher(self.platform).want(self)  # its passes ask again until it is stored
                    raise
        if taken:
            self.stored()


# In a session's `info`: the pieces `Pending.store` added to its transaction, (writer, taken) in
# the order they were taken; and whether the session's events below are listened to.
_TAKEN = "orch.output_taken"
_LISTENING = "orch.output_listening"


def _given_back_unless_committed(s: Session, writer: Pending, taken: Taken) -> None:
    """`taken` goes back to `writer` when `s`'s transaction ends without committing."""
    if not s.info.get(_LISTENING):
        event.listen(s, "after_commit", _committed)
        event.listen(s, "after_transaction_end", _ended)
        s.info[_LISTENING] = True
    s.info.setdefault(_TAKEN, []).append((writer, taken))


def _committed(s: Session) -> None:
    if not s.in_nested_transaction():  # a savepoint's commit is not the transaction's
        s.info.pop(_TAKEN, None)  # stored


def _ended(s: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # not committed (`_committed` took them else): they wait again
        for writer, taken in reversed(s.info.pop(_TAKEN, [])):  # each before the later ones
            writer.give_back(taken)


class Flusher:
    """Stores the waiting pieces of every writer of one platform, a moment after they come, in one
    transaction; a thread of its own while there is something to store."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._waiting: dict[Pending, None] = {}  # an ordered set
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Since when storing fails (monotonic), None while it works: the thread says so once.
        self._failing: float | None = None

    def want(self, writer: Pending) -> None:
        with self._lock:
            self._waiting[writer] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="orch-output", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            if not self._wake.wait(_IDLE):
                with self._lock:
                    if not self._waiting:
                        self._thread = None
                        return
                continue
            self._wake.clear()
            time.sleep(FLUSH_DELAY)  # what comes meanwhile shares the transaction
            try:
                self.store_waiting()
            except Exception as e:  # the store is away: the pieces wait for the next try
                if self._failing is None:  # said once, not at every try
                    self._failing = time.monotonic()
                    log.warning(
                        "storing output failed (%s); trying again every second",
                        _said(e),
                        exc_info=store_refused(e) is None,  # not the store refusing: a bug
                    )
                time.sleep(1.0)
                self._wake.set()
            else:
                if self._failing is not None:
                    log.info("stored output again after %.0f s", time.monotonic() - self._failing)
                    self._failing = None

    def store_waiting(self) -> None:
        with self._lock:
            writers, self._waiting = list(self._waiting), {}
        if not writers:
            return
        with ExitStack() as held:
            for w in writers:
                held.enter_context(w.storing)
            taken = [(w, w.take()) for w in writers]
            try:
                with self.platform.store.session() as s:
                    for w, pieces in taken:
                        w.add(s, pieces)
            except Exception:
                for w, pieces in taken:
                    w.give_back(pieces)
                with self._lock:
                    self._waiting.update(dict.fromkeys(writers))
                raise
        for w, pieces in taken:
            if pieces:
                w.stored()


def _said(e: Exception) -> str:
    """What a failed store says, as one line: its driver's error (under SQLAlchemy's, whose text
    goes on with the statement), with its kind."""
    error = getattr(e, "orig", None) or e
    return f"{type(error).__name__}: {first_line(error)}"


def flusher(platform: Platform) -> Flusher:
    """The platform's flusher, made and kept on it at first use."""
    return kept(platform, "_output_flusher", lambda: Flusher(platform))


def joined(pieces: Iterable[tuple[int, bytes]], offset: int, limit: int) -> bytes:
    """Up to `limit` bytes from byte `offset` of a stream whose stored `pieces` (start, data) come
    in order of start: what is stored without a gap from there (a later piece may be stored
    before an earlier one is committed elsewhere; a reader asks again from where this ends)."""
    got = bytearray()
    for start, data in pieces:
        here = offset + len(got)
        if start > here or len(got) >= limit:
            break
        got.extend(data[here - start : here - start + limit - len(got)])
    return bytes(got)
