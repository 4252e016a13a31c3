"""A run's output in the store: its three streams (stdout, stderr, log), each kept as pieces from
a byte offset and bounded at MAX_OUTPUT bytes, so that any server of the store answers for any
run, whichever machine ran it (docs/scale.md).

    RunOutput(platform, run_id)     what a run's worker writes to: masked, bounded, held in memory
    flusher(platform)               stores every run's waiting pieces in one transaction, a moment
                                    after they come (FLUSH_DELAY); a run's end stores its rest in
                                    the transaction that ends it (RunOutput.store)
    read(s, run_id, offsets)        what a follower gets from its byte offsets
    note(s, run_id, text)           a line of the server's own in a run's log
    import_files(platform)          the files servers before 0014 kept under ORCH_HOME/logs/runs

A run's output is written by one worker and read by its followers: the flusher wakes those of
this server at each store; another server's followers find it at their next look (runs.long_poll
looks again every FOLLOW_RECHECK seconds).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from orch.secret.mask import Redactor
from orch.services.platform import Platform
from orch.store.schema import RunOutputRow, RunRow

log = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr", "log")
MAX_OUTPUT = 1024 * 1024  # kept per stream; the rest is drained and counted, not stored
# How long a piece of output waits for more before it is stored: a chatty run costs the store one
# transaction per FLUSH_DELAY, not one per write, and every run's pieces share it.
FLUSH_DELAY = 0.05
_IDLE = 5.0  # seconds with nothing to store before the flusher's thread ends (the next write starts it)

_END = RunOutputRow.start + func.length(RunOutputRow.data)  # the byte after a piece


@dataclass
class Taken:
    """Pieces of output on their way to the store: (stream, start, data), and whether a stream
    was cut at its bound meanwhile."""

    pieces: list[tuple[str, int, bytearray]]
    cut: bool

    def __bool__(self) -> bool:
        return bool(self.pieces or self.cut)


class RunOutput:
    """The streams of one run being executed. `write` is called from the sandbox's reader threads;
    what is written waits in memory until the platform's flusher or the run's end stores it. Once
    `mask` is given the run's secrets, each of their values is stored as *** (secret/mask.py)."""

    def __init__(self, platform: Platform, run_id: str) -> None:
        self.platform = platform
        self.run_id = run_id
        with platform.store.session() as s:  # a run queued again goes on after its earlier output
            self.sizes = sizes(s, run_id)
        self.stderr_tail = b""
        self.redactors: dict[str, Redactor] = {}
        self._pending: list[tuple[str, int, bytearray]] = []
        self._cut = False  # a stream reached its bound since the last store
        self._lock = threading.Lock()  # guards the two above
        # Held from taking the pending pieces to their commit, so pieces are stored in order: a
        # follower never sees a later piece before an earlier one.
        self.storing = threading.Lock()

    def mask(self, values: Iterable[str]) -> None:
        """From now on, store each of `values` as *** in every stream."""
        found = [v.encode() for v in values if v]
        if found:
            self.redactors = {n: Redactor(found) for n in STREAMS}

    def write(self, stream: str, data: bytes) -> None:
        redactor = self.redactors.get(stream)
        if redactor is not None and self.sizes[stream] < MAX_OUTPUT:  # past the limit: dropped anyway
            data = redactor.feed(data)
        self._keep(stream, data)

    def line(self, text: str) -> None:
        self.write("log", (text + "\n").encode())

    def flush(self) -> None:
        """Keep what the masking held back (the end of a stream that might begin a value): the
        sandbox has ended, so nothing more arrives."""
        for stream, redactor in self.redactors.items():
            self._keep(stream, redactor.close())

    def _keep(self, stream: str, data: bytes) -> None:
        if not data:
            return
        if stream == "stderr":
            self.stderr_tail = (self.stderr_tail + data)[-4096:]
        with self._lock:
            start = self.sizes[stream]
            room = MAX_OUTPUT - start
            if len(data) > room:
                self._cut = True
                data = data[: max(room, 0)]
                if not data:
                    return
            self.sizes[stream] = start + len(data)
            last = self._pending[-1] if self._pending else None
            if last is not None and last[0] == stream and last[1] + len(last[2]) == start:
                last[2].extend(data)  # one row for what came in a row
            else:
                self._pending.append((stream, start, bytearray(data)))
        flusher(self.platform).want(self)

    def take(self) -> Taken:
        """The waiting pieces, no longer waiting (the caller holds `storing` until they are
        stored, or gives them back)."""
        with self._lock:
            taken = Taken(self._pending, self._cut)
            self._pending, self._cut = [], False
        return taken

    def add(self, s: Session, taken: Taken) -> None:
        s.add_all(
            RunOutputRow(run_id=self.run_id, stream=n, start=at, data=bytes(d)) for n, at, d in taken.pieces
        )
        if taken.cut:
            s.execute(update(RunRow).where(RunRow.id == self.run_id).values(truncated=True))

    def store(self, s: Session) -> bool:
        """Add the waiting pieces to `s` (the caller holds `storing` until `s` commits); whether
        there were any."""
        taken = self.take()
        self.add(s, taken)
        return bool(taken)

    def give_back(self, taken: Taken) -> None:
        """Pieces whose store failed, waiting again before anything written since."""
        with self._lock:
            self._pending[:0] = taken.pieces
            self._cut = self._cut or taken.cut

    def close(self) -> None:
        """Store what is left (the run has ended, so its followers are woken now)."""
        self.flush()
        with self.storing, self.platform.store.session() as s:
            stored = self.store(s)
        if stored:
            self.platform.notify_runs(self.run_id)


class Flusher:
    """Stores the waiting output of every run of one platform, a moment after it comes, in one
    transaction; a thread of its own while there is output to store."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._waiting: dict[RunOutput, None] = {}  # an ordered set
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def want(self, out: RunOutput) -> None:
        with self._lock:
            self._waiting[out] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="orch-run-output", daemon=True)
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
            except Exception:  # the store is away: the pieces wait for the next try
                log.exception("storing runs' output failed; trying again")
                time.sleep(1.0)
                self._wake.set()

    def store_waiting(self) -> None:
        with self._lock:
            outs, self._waiting = list(self._waiting), {}
        if not outs:
            return
        with ExitStack() as held:
            for out in outs:
                held.enter_context(out.storing)
            taken = [(out, out.take()) for out in outs]
            try:
                with self.platform.store.session() as s:
                    for out, pieces in taken:
                        out.add(s, pieces)
            except Exception:
                for out, pieces in taken:
                    out.give_back(pieces)
                with self._lock:
                    self._waiting.update(dict.fromkeys(outs))
                raise
        stored = [out.run_id for out, pieces in taken if pieces]
        for run_id in stored:
            self.platform.notify_runs(run_id)


_FLUSHERS_LOCK = threading.Lock()


def flusher(platform: Platform) -> Flusher:
    """The platform's flusher, made and kept on it at first use (as metrics.of)."""
    found: Flusher | None = getattr(platform, "_run_output_flusher", None)
    if found is None:
        with _FLUSHERS_LOCK:
            found = getattr(platform, "_run_output_flusher", None)
            if found is None:
                found = Flusher(platform)
                setattr(platform, "_run_output_flusher", found)  # noqa: B010  # Platform has no such field
    return found


def sizes(s: Session, run_id: str) -> dict[str, int]:
    """The bytes stored of each of the run's streams."""
    ends = select(RunOutputRow.stream, func.max(_END)).where(RunOutputRow.run_id == run_id)
    found = dict(s.execute(ends.group_by(RunOutputRow.stream)).all())
    return {n: int(found.get(n) or 0) for n in STREAMS}


def read(s: Session, run_id: str, offsets: Mapping[str, int], limit: int = MAX_OUTPUT) -> dict[str, bytes]:
    """Up to `limit` bytes of each stream from its offset in `offsets` (0 when absent): what is
    stored without a gap from there."""
    at = {n: max(int(offsets.get(n, 0)), 0) for n in STREAMS}
    found = {n: bytearray() for n in STREAMS}
    asked = [n for n in STREAMS if at[n] < MAX_OUTPUT]  # no stream goes further (nor fits a column)
    if not asked:
        return {n: b"" for n in STREAMS}
    rows = s.execute(
        select(RunOutputRow.stream, RunOutputRow.start, RunOutputRow.data)
        .where(
            RunOutputRow.run_id == run_id,
            or_(*(and_(RunOutputRow.stream == n, at[n] < _END) for n in asked)),
        )
        .order_by(RunOutputRow.stream, RunOutputRow.start)
    )
    for stream, start, data in rows:
        got = found[stream]
        here = at[stream] + len(got)
        if start > here or len(got) >= limit:  # not stored yet (a gap), or enough
            continue
        got.extend(data[here - start : here - start + limit - len(got)])
    return {n: bytes(d) for n, d in found.items()}


def note(s: Session, run_id: str, text: str) -> None:
    """A line of the server's own at the end of the run's log."""
    start = sizes(s, run_id)["log"]
    s.add(RunOutputRow(run_id=run_id, stream="log", start=start, data=(text + "\n").encode()))


def import_files(platform: Platform) -> int:
    """Move the output that servers before 0014 kept in files (ORCH_HOME/logs/runs/RUN/STREAM)
    into the store, then remove the files; a run deleted since has its files removed. Return how
    many runs' output moved. Done at start, before any worker runs; a stop half-way is taken up
    again at the next start (a run whose output is in the store already is not imported twice)."""
    where = platform.config.home / "logs" / "runs"
    if not where.is_dir():
        return 0
    moved = 0
    for folder in sorted(p for p in where.iterdir() if p.is_dir()):
        with platform.store.session() as s:
            known = s.get(RunRow, folder.name) is not None
            if known and not any(sizes(s, folder.name).values()):
                for stream in STREAMS:
                    path = folder / stream
                    data = path.read_bytes()[:MAX_OUTPUT] if path.is_file() else b""
                    if data:
                        s.add(RunOutputRow(run_id=folder.name, stream=stream, start=0, data=data))
                if (folder / "truncated").exists():
                    s.execute(update(RunRow).where(RunRow.id == folder.name).values(truncated=True))
                moved += 1
        shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(where, ignore_errors=True)
    return moved
