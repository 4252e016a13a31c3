"""A service's output, in the store: any server answers for any service, wherever its
containers run.

Each container writes a k8s-file log on the machine that runs it (conmon's: the container
outlives every server). The service's supervisor stores what is new in each of its containers'
files at every pass (`ship`), and the rest when a container ends (`archive`), as pieces of the
service's output from a byte offset (service_log); a cursor per container says how far its
file is stored. The output only ever grows, so a reader follows it with one byte offset; the
last MAX_HISTORY bytes are kept (older pieces go), and a reader behind them goes on from there."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from orch.kept import kept
from orch.services.log_files import whole_characters
from orch.services.output_store import joined
from orch.services.platform import Platform
from orch.store.schema import ServiceLogCursorRow, ServiceLogRow, ServiceRow

MAX_HISTORY = 4 * 1024 * 1024  # kept per service; older output is dropped from the front
# A container's log file starts afresh when it reaches this (Podman's k8s-file `max-size`), so
# a chatty or hostile service cannot fill the disk, nor make each read of its logs grow.
MAX_CONTAINER_LOG = 8 * 1024 * 1024
TAIL_LINES = 40


@dataclass
class _Held:
    """A container's log file as this process read it last, kept open: when conmon renames a
    new file over it, the rest of it is still read (what the container printed between the last
    pass and the new file), and `read` says how far this process stored it (another server may
    have stored the container since: then its cursor differs, and this file is let go)."""

    file: BinaryIO
    inode: int
    read: int


def _files(platform: Platform) -> dict[str, _Held]:
    """The log files this platform holds open, by container name: two platforms in one process
    hold their own."""
    return kept(platform, "_service_log_files", dict)


def directory(platform: Platform, service_id: str) -> Path:
    path = platform.config.home / "logs" / "services" / service_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def container_log(platform: Platform, service_id: str, container: str) -> Path:
    return directory(platform, service_id) / f"{container}.log"


def parse(raw: str) -> str:
    """The text of a k8s-file log: `TIMESTAMP STREAM F|P TEXT` per line (P: a partial line)."""
    out: list[str] = []
    for line in raw.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else ""
        out.append(text if parts[2] == "P" else text + "\n")
    return "".join(out)


def read_container(platform: Platform, service_id: str, container: str | None) -> str:
    """The text of a container's log file on this machine (what a failed start printed)."""
    if not container:
        return ""
    try:
        return parse(container_log(platform, service_id, container).read_text(errors="replace"))
    except FileNotFoundError:
        return ""


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "".join(text.splitlines(keepends=True)[-lines:])


def ship(platform: Platform, s: Session, service_id: str, container: str) -> None:
    """Store what the container's log file holds past its cursor (whole lines only: conmon
    writes a line at once, and a line not ended yet waits for the next pass).

    conmon starts the file afresh at its limit: a new file renamed over the old one. The old
    one, still open here, is read to its end first; then the new one from its start. A server
    that did not hold the old one open (started since, or another server stored the container
    meanwhile) knows only the cursor: a file shorter than it is read from its start."""
    cursor = s.get(ServiceLogCursorRow, container)
    read = cursor.read if cursor is not None else 0
    files = _files(platform)
    held = files.pop(container, None)
    if held is not None and held.read != read:
        held.file.close()
        held = None
    try:
        current: BinaryIO | None = container_log(platform, service_id, container).open("rb")
    except FileNotFoundError:
        current = None
    if current is None:  # removed: the rest of the one read so far
        if held is not None:
            _cursor(s, cursor, service_id, container, _store(s, service_id, held.file, read))
            held.file.close()
        return
    inode = os.fstat(current.fileno()).st_ino
    if held is not None and held.inode == inode:
        current.close()
        current = held.file
    elif held is not None:  # renamed over: the rest of the old one, then the new one from its start
        _store(s, service_id, held.file, read)
        held.file.close()
        read = 0
    if current.seek(0, 2) < read:  # started afresh in place (or the server does not know)
        read = 0
    read = _store(s, service_id, current, read)
    files[container] = _Held(current, inode, read)
    _cursor(s, cursor, service_id, container, read)


def _store(s: Session, service_id: str, f: BinaryIO, read: int) -> int:
    """Store the whole lines of `f` past `read`; return how far it is stored now."""
    size = f.seek(0, 2)
    if size <= read:
        return read
    f.seek(read)
    raw = f.read(size - read)
    whole = raw[: raw.rfind(b"\n") + 1]
    append(s, service_id, parse(whole.decode("utf-8", "replace")).encode())
    return read + len(whole)


def _cursor(
    s: Session, cursor: ServiceLogCursorRow | None, service_id: str, container: str, read: int
) -> None:
    if cursor is None:
        s.add(ServiceLogCursorRow(container=container, service_id=service_id, read=read))
    elif cursor.read != read:
        cursor.read = read


def forget(platform: Platform, container: str) -> None:
    """Let go of a container's log file (it ended, or this server no longer stores it)."""
    held = _files(platform).pop(container, None)
    if held is not None:
        held.file.close()


def keep_only(platform: Platform, containers: set[str]) -> None:
    """Let go of the log files of every container but these (those this server stores; none
    when it stops)."""
    for container in list(_files(platform)):
        if container not in containers:
            forget(platform, container)


def archive(platform: Platform, s: Session, service_id: str, container: str) -> str:
    """A container ends: store the rest of its output, forget its file and cursor, and return
    its last lines."""
    ship(platform, s, service_id, container)
    forget(platform, container)
    s.execute(delete(ServiceLogCursorRow).where(ServiceLogCursorRow.container == container))
    text = read_container(platform, service_id, container)
    container_log(platform, service_id, container).unlink(missing_ok=True)
    return tail(text)


def end(s: Session, service_id: str) -> tuple[int, int]:
    """Where the service's stored output (start of its oldest kept piece, end) lies."""
    last = s.execute(
        select(ServiceLogRow.start, func.length(ServiceLogRow.data))
        .where(ServiceLogRow.service_id == service_id)
        .order_by(ServiceLogRow.start.desc())
        .limit(1)
    ).first()
    if last is None:
        return 0, 0
    first = s.scalar(select(func.min(ServiceLogRow.start)).where(ServiceLogRow.service_id == service_id))
    return int(first or 0), int(last[0]) + int(last[1])


def append(s: Session, service_id: str, data: bytes) -> None:
    """Add `data` at the end of the service's output; drop what falls out of MAX_HISTORY."""
    if not data:
        return
    first, at = end(s, service_id)
    if len(data) > MAX_HISTORY:  # more than is kept at all: only its end is, from a line's start
        cut = len(data) - MAX_HISTORY
        line = data.find(b"\n", cut - 1) + 1
        cut = line if 0 < line < len(data) else cut
        at, data = at + cut, data[cut:]
    s.add(ServiceLogRow(service_id=service_id, start=at, data=data))
    keep_from = at + len(data) - MAX_HISTORY
    if first < keep_from:
        s.flush()
        s.execute(
            delete(ServiceLogRow).where(
                ServiceLogRow.service_id == service_id,
                ServiceLogRow.start < keep_from,
                ServiceLogRow.start + func.length(ServiceLogRow.data) <= keep_from,
            )
        )


def read(s: Session, service_id: str, offset: int) -> tuple[str, int]:
    """The service's output from byte `offset`: the text and the offset to ask from next. A
    reader behind the last MAX_HISTORY bytes goes on from there, at the first line that starts
    in them (at a character's start, if none does); one ahead of the end (an offset from before
    a service of the same name was deleted) from the end."""
    first, at = end(s, service_id)
    floor = max(first, at - MAX_HISTORY)
    # Behind what is kept, where older pieces are kept still (the oldest kept piece starts a
    # line; a bound amid a piece may not): from the byte before, to see whether a line starts.
    behind = offset < floor and floor > first
    offset = min(max(offset, floor), at) - behind
    if offset == at:
        return "", at
    since = s.scalar(
        select(func.max(ServiceLogRow.start)).where(
            ServiceLogRow.service_id == service_id, ServiceLogRow.start <= offset
        )
    )
    rows = s.execute(
        select(ServiceLogRow.start, ServiceLogRow.data)
        .where(ServiceLogRow.service_id == service_id, ServiceLogRow.start >= (since or first))
        .order_by(ServiceLogRow.start)
    ).all()
    chunk = whole_characters(joined(rows, offset, MAX_HISTORY + behind))
    line = chunk.find(b"\n") + 1 if behind else 0
    if line <= 0:  # no line starts in it: from a character's start
        skip = int(behind)
        cut = skip + next((i for i, byte in enumerate(chunk[skip : skip + 4]) if byte & 0xC0 != 0x80), 0)
    else:
        cut = line
    return chunk[cut:].decode("utf-8", "replace"), offset + len(chunk)


def import_files(platform: Platform) -> int:
    """Move the history that servers before 0017 kept in files (ORCH_HOME/logs/services/
    SERVICE/history.log) into the store; return how many services' history moved. The files of
    containers that still run stay: their supervisor stores them from their start. Done at
    start, before the supervisor runs."""
    where = platform.config.home / "logs" / "services"
    if not where.is_dir():
        return 0
    moved = 0
    for folder in sorted(p for p in where.iterdir() if p.is_dir()):
        history = folder / "history.log"
        with platform.store.session() as s:
            known = s.get(ServiceRow, folder.name) is not None
            if known and history.is_file() and end(s, folder.name) == (0, 0):
                append(s, folder.name, history.read_bytes())
                moved += 1
        if known:
            history.unlink(missing_ok=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return moved
