"""A build's log in the store, as pieces from a byte offset bounded at MAX_LOG bytes, so that any
server of the store answers for any build, whichever machine built it (docs/scale.md). What the
log says (steps numbered as in the user's Dockerfile, a failure's excerpt) is build_log.py's.

    BuildOutput(platform, build_id)   what a build's worker writes its lines to: held in memory
                                      until the platform's flusher stores it (output_store.py)
    read(s, build_id, offset, limit)  what a reader gets from its byte offset, and the log's size
    note(s, build_id, text)           text of the server's own at the end of the log
    import_files(platform)            the files servers before 0014 kept under ORCH_HOME/logs/builds
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orch.services.output_store import Pending, Taken, joined
from orch.services.platform import Platform
from orch.store.schema import BuildLogRow, BuildRow

MAX_LOG = 16 * 1024 * 1024  # bytes kept of a build's log (every attempt's together)
STREAM = "log"

_END = BuildLogRow.start + func.length(BuildLogRow.data)


class BuildOutput(Pending):
    """The log of one build being run, written line by line from its worker's thread."""

    def __init__(self, platform: Platform, build_id: str) -> None:
        with platform.store.session() as s:  # an attempt after a stop goes on after the earlier
            super().__init__(platform, {STREAM: size(s, build_id)}, MAX_LOG)
        self.build_id = build_id
        self.full = False  # past MAX_LOG: lines are no longer kept

    def line(self, text: str) -> None:
        if self.full:
            return
        data = (text + "\n").encode()
        room = self.bound - self.sizes[STREAM]
        if len(data) <= room:
            self.keep(STREAM, data)
            return
        self.full = True  # the log's first MAX_LOG bytes, then one line that says so
        self.keep(STREAM, data[: max(room, 0)])
        said = f"\n(The output passed {MAX_LOG // 2**20} MiB; the rest is not kept here.)\n"
        self.bound += len(said)
        self.keep(STREAM, said.encode())

    def add(self, s: Session, taken: Taken) -> None:
        # A build whose environment was deleted while it ran has no row to hang its log on: what
        # it printed before it was stopped goes (it would fail the flusher's every transaction).
        if taken.pieces and s.get(BuildRow, self.build_id) is not None:
            s.add_all(
                BuildLogRow(build_id=self.build_id, start=at, data=bytes(d)) for _, at, d in taken.pieces
            )


def size(s: Session, build_id: str) -> int:
    return int(s.scalar(select(func.max(_END)).where(BuildLogRow.build_id == build_id)) or 0)


def read(s: Session, build_id: str, offset: int, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes of the log from byte `offset` (what is stored without a gap from
    there), and the log's size now."""
    offset = max(offset, 0)
    total = size(s, build_id)
    if offset >= total:
        return b"", total
    rows = s.execute(
        select(BuildLogRow.start, BuildLogRow.data)
        .where(BuildLogRow.build_id == build_id, offset < _END)
        .order_by(BuildLogRow.start)
    )
    return joined(((start, data) for start, data in rows), offset, limit), total


def note(s: Session, build_id: str, text: str) -> None:
    """`text` of the server's own at the end of the build's log."""
    s.add(BuildLogRow(build_id=build_id, start=size(s, build_id), data=text.encode()))


def import_files(platform: Platform) -> int:
    """Move the logs servers before 0014 kept as files (ORCH_HOME/logs/builds/BUILD.log) into the
    store, then remove them; return how many moved. Done at start, before any worker runs; a
    build whose log is in the store already is not imported twice."""
    where = platform.config.home / "logs" / "builds"
    moved = 0
    for path in sorted(where.glob("*.log")) if where.is_dir() else []:
        build_id = path.name.removesuffix(".log")
        with platform.store.session() as s:
            if s.get(BuildRow, build_id) is not None and size(s, build_id) == 0:
                data = path.read_bytes()[:MAX_LOG]
                if data:
                    s.add(BuildLogRow(build_id=build_id, start=0, data=data))
                    moved += 1
        path.unlink()
    return moved
