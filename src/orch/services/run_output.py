"""A run's output in the store: its three streams (stdout, stderr, log), each kept as pieces from
a byte offset and bounded at MAX_OUTPUT bytes, so that any server of the store answers for any
run, whichever machine ran it (docs/scale.md).

    RunOutput(platform, run_id)     what a run's worker writes to: masked, bounded, held in memory
                                    until the platform's flusher stores it (output_store.py); a
                                    run's end stores its rest in the transaction that ends it
    read(s, run_id, offsets)        what a follower gets from its byte offsets
    note(s, run_id, text)           a line of the server's own in a run's log
    import_files(platform)          the files servers before 0014 kept under ORCH_HOME/logs/runs

A run's output is written by one worker and read by its followers: each store wakes those of
this server; another server's followers find it at their next look (runs.long_poll looks again
every FOLLOW_RECHECK seconds).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, Integer, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from orch.secret.mask import MASK, Mask, Redactor
from orch.services.output_store import Pending, Taken, joined
from orch.services.platform import Platform
from orch.store.schema import RunOutputRow, RunRow

STREAMS = ("stdout", "stderr", "log")
MAX_OUTPUT = 1024 * 1024  # kept per stream; the rest is drained and counted, not stored

_END = RunOutputRow.start + func.length(RunOutputRow.data)  # the byte after a piece


class RunOutput(Pending):
    """The streams of one run being executed, written from the sandbox's reader threads. Once
    `mask` is given the run's secrets, each of their values is stored as *** (secret/mask.py),
    and `hide` masks the same values in the rest of what is stored for the run (its reason,
    which may quote an endpoint's message, an engine's error or a sandbox's stderr)."""

    def __init__(self, platform: Platform, run_id: str) -> None:
        # Empty: a run's output begins at its first attempt; `resume` for one queued again.
        super().__init__(platform, dict.fromkeys(STREAMS, 0), MAX_OUTPUT)
        self.run_id = run_id
        self.stderr_tail = b""
        self.redactors: dict[str, Redactor] = {}
        self.hide = Mask()

    def resume(self, s: Session) -> None:
        """Go on after what the run's earlier attempts (and the server's notes) stored: called
        before anything is written, for a run claimed again."""
        self.sizes = sizes(s, self.run_id)

    def mask(self, values: Iterable[str]) -> None:
        """From now on, store each of `values` as *** in every stream (and `hide` them)."""
        self.hide = Mask(values)
        if self.hide:
            self.redactors = {n: self.hide.redactor() for n in STREAMS}

    def write(self, stream: str, data: bytes) -> None:
        redactor = self.redactors.get(stream)
        if redactor is not None and not self.exhausted(stream):  # past the limit: dropped anyway
            data = redactor.feed(data)
        self._keep(stream, data)

    def line(self, text: str) -> None:
        self.write("log", (text + "\n").encode())

    def flush(self) -> None:
        """Keep what the masking held back (the end of a stream that might begin a value): the
        sandbox has ended, so nothing more arrives."""
        for stream, redactor in self.redactors.items():
            self._keep(stream, redactor.close())

    def cut_at(self, stream: str, data: bytes, room: int) -> int:
        """A masked stream's cut never splits a `***`: when the cut falls between two `*`, the
        kept part ends before its last one or two (a reader would take `**` for a cut mask or
        for the agent's text), and the stream ends there (`Pending.keep`): what came after the
        `***` is not kept in the room it left."""
        if stream not in self.redactors:
            return room
        back = 0
        while back < len(MASK) - 1 and room - back > 0 and data[room - back - 1 : room - back] == b"*":
            back += 1
        return room - back if back and data[room : room + 1] == b"*" else room

    def _keep(self, stream: str, data: bytes) -> None:
        if stream == "stderr" and data:
            self.stderr_tail = (self.stderr_tail + data)[-4096:]
        self.keep(stream, data)

    def add(self, s: Session, taken: Taken) -> None:
        s.add_all(
            RunOutputRow(run_id=self.run_id, stream=n, start=at, data=bytes(d)) for n, at, d in taken.pieces
        )
        if taken.cut:
            s.execute(update(RunRow).where(RunRow.id == self.run_id).values(truncated=True))

    def stored(self) -> None:
        self.platform.notify_runs(self.run_id)

    def close(self) -> None:
        """Store what is left (the run has ended, so its followers are woken now)."""
        self.flush()
        super().close()


def sizes(s: Session, run_id: str) -> dict[str, int]:
    """The bytes stored of each of the run's streams."""
    ends = select(RunOutputRow.stream, func.max(_END)).where(RunOutputRow.run_id == run_id)
    found = dict(s.execute(ends.group_by(RunOutputRow.stream)).all())
    return {n: int(found.get(n) or 0) for n in STREAMS}


# What `read` asks, built once (it runs at every change a follower waits for): each stream's
# pieces that end after that stream's offset; an offset of MAX_OUTPUT asks nothing of it.
_READ = (
    select(RunOutputRow.stream, RunOutputRow.start, RunOutputRow.data)
    .where(
        RunOutputRow.run_id == bindparam("run_id"),
        or_(*(and_(RunOutputRow.stream == n, bindparam(f"at_{n}", type_=Integer) < _END) for n in STREAMS)),
    )
    .order_by(RunOutputRow.stream, RunOutputRow.start)
)


def read(
    s: Session | Connection, run_id: str, offsets: Mapping[str, int], limit: int = MAX_OUTPUT
) -> dict[str, bytes]:
    """Up to `limit` bytes of each stream from its offset in `offsets` (0 when absent): what is
    stored without a gap from there."""
    # No stream goes further than MAX_OUTPUT (nor fits a column).
    at = {n: min(max(int(offsets.get(n, 0)), 0), MAX_OUTPUT) for n in STREAMS}
    found: dict[str, list[tuple[int, bytes]]] = {n: [] for n in STREAMS}
    if any(at[n] < MAX_OUTPUT for n in STREAMS):
        for stream, start, data in s.execute(
            _READ, {"run_id": run_id, **{f"at_{n}": at[n] for n in STREAMS}}
        ):
            found[stream].append((start, data))
    return {n: joined(found[n], at[n], limit) for n in STREAMS}


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
