"""A service's output in the store (services/deployed_logs.py), on SQLite and on PostgreSQL:
whole lines stored past each container's cursor, a file started afresh read from its start, the
oldest output dropped past MAX_HISTORY (a reader behind it goes on from the oldest kept), and the
history of servers before 0017 moved in from its file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.services import deployed_logs
from orch.services.platform import Platform
from orch.store.schema import ServiceLogCursorRow, ServiceLogRow
from orch.workers.supervisor import Supervisor
from tests.unit.test_service_leases import services


@pytest.fixture(autouse=True)
def _let_go(platform: Platform) -> Iterator[None]:
    yield
    deployed_logs.keep_only(platform, set())  # the log files the tests' ships held open


def line(text: str, kind: str = "F") -> str:
    return f"2026-01-01T00:00:00Z stdout {kind} {text}\n"


def first_pass(platform: Platform, workspace: tuple[str, str], container: str, text: str) -> tuple[str, Path]:
    """A service whose container's log file holds `text`, stored at a first pass."""
    (svc,) = services(platform, workspace[0], 1)
    log = deployed_logs.container_log(platform, svc, container)
    log.write_text(text)
    ship(platform, svc, container)
    return svc, log


def started_afresh(log: Path, text: str) -> None:
    """conmon at its limit: a new file renamed over the old one."""
    fresh = log.with_name(log.name + ".tmp")
    fresh.write_text(text)
    fresh.rename(log)


def append_lines(log: Path, text: str) -> None:
    with log.open("a") as f:
        f.write(text)


def read(platform: Platform, service_id: str, offset: int = 0) -> tuple[str, int]:
    with platform.store.session() as s:
        return deployed_logs.read(s, service_id, offset)


def ship(platform: Platform, service_id: str, container: str) -> None:
    with platform.store.session() as s:
        deployed_logs.ship(platform, s, service_id, container)


def test_whole_lines_past_the_cursor_and_a_file_started_afresh(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    (svc,) = services(platform, workspace[0], 1)
    log = deployed_logs.container_log(platform, svc, "c1")
    # A partial line (P) is a whole line of the file; the last line is cut mid-way (not yet written).
    log.write_text(line("one") + line("tw", "P") + "2026-01-01T00:00:00Z stdout F o")
    ship(platform, svc, "c1")
    assert read(platform, svc) == ("one\ntw", 6)
    with log.open("a") as f:
        f.write("\n" + line("three"))
    ship(platform, svc, "c1")
    ship(platform, svc, "c1")  # nothing new: nothing stored twice
    assert read(platform, svc) == ("one\ntwo\nthree\n", 14)
    assert read(platform, svc, 4) == ("two\nthree\n", 14)
    log.write_text(line("afresh"))  # conmon at its limit: a new, shorter file
    ship(platform, svc, "c1")
    assert read(platform, svc, 14) == ("afresh\n", 21)
    with platform.store.session() as s:
        assert deployed_logs.archive(platform, s, svc, "c1") == "afresh\n"
    assert not log.exists()
    with platform.store.session() as s:
        assert s.get(ServiceLogCursorRow, "c1") is None
    assert read(platform, svc, 21) == ("", 21)


def test_a_file_started_afresh_and_grown_past_the_cursor_between_two_passes_is_read_whole(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    svc, log = first_pass(platform, workspace, "c2", line("first"))
    # A new file, which a flood has already filled past where the old one was read to.
    started_afresh(log, line("second") + line("third"))
    ship(platform, svc, "c2")
    assert read(platform, svc) == ("first\nsecond\nthird\n", 19)


def test_what_the_old_file_got_after_the_last_pass_is_stored_before_the_new_file(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    svc, log = first_pass(platform, workspace, "c3", line("one"))
    # Between two passes the old file gets more, then conmon renames a new one over it.
    append_lines(log, line("two") + line("three"))
    started_afresh(log, line("four"))
    ship(platform, svc, "c3")
    assert read(platform, svc) == ("one\ntwo\nthree\nfour\n", 19)
    # The old file's rest is stored once; the new one goes on from its cursor.
    append_lines(log, line("five"))
    ship(platform, svc, "c3")
    assert read(platform, svc, 19) == ("five\n", 24)
    # A container whose file is removed: the rest of the file held open is stored.
    append_lines(log, line("six"))
    log.unlink()
    ship(platform, svc, "c3")
    assert read(platform, svc, 24) == ("six\n", 28)
    deployed_logs.keep_only(platform, set())
    assert "c3" not in deployed_logs._files(platform)


def test_a_file_another_server_stored_meanwhile_is_let_go(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    svc, log = first_pass(platform, workspace, "c4", line("one"))
    held = deployed_logs._files(platform)["c4"].file
    # Another server held the service for a while: it stored the old file's rest and part of a
    # new one. The file this server kept open is not read again.
    append_lines(log, line("two"))
    started_afresh(log, line("three") + line("four"))
    with platform.store.session() as s:
        deployed_logs.append(s, svc, b"two\nthree\n")
        s.get(ServiceLogCursorRow, "c4").read = len(line("three"))
    ship(platform, svc, "c4")
    assert held.closed
    assert read(platform, svc) == ("one\ntwo\nthree\nfour\n", 19)


def test_the_oldest_output_goes_past_the_bound(
    platform: Platform, workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployed_logs, "MAX_HISTORY", 100)
    svc, other = services(platform, workspace[0], 2)
    with platform.store.session() as s:
        for i in range(30):
            deployed_logs.append(s, svc, f"{i:09d}\n".encode())  # 10 bytes each: 300 in all
        deployed_logs.append(s, other, b"another service's\n")
    with platform.store.session() as s:
        first, end = deployed_logs.end(s, svc)
        kept = s.query(ServiceLogRow).filter_by(service_id=svc).count()
    assert (first, end) == (200, 300) and kept == 10
    text, offset = read(platform, svc, 0)  # behind what is kept: from the last MAX_HISTORY bytes
    assert text == "".join(f"{i:09d}\n" for i in range(20, 30)) and offset == 300
    assert read(platform, svc, 255) == ("".join(f"{i:09d}\n" for i in range(25, 30))[5:], 300)
    assert read(platform, svc, 10_000) == ("", 300)  # ahead of the end: from the end
    with platform.store.session() as s:  # more than the bound at once: its end is kept
        deployed_logs.append(s, svc, b"x" * 250)
    assert read(platform, svc) == ("x" * 100, 550)
    assert read(platform, other) == ("another service's\n", 18)


def test_the_bound_does_not_cut_a_line_in_half(
    platform: Platform, workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a reader behind the kept output began MAX_HISTORY bytes from its end, amid a
    line ("line 24455 fff..." for "flood line 24455 fff..."); so did a piece longer than it."""
    monkeypatch.setattr(deployed_logs, "MAX_HISTORY", 25)
    (svc,) = services(platform, workspace[0], 1)
    with platform.store.session() as s:
        for i in range(4):
            deployed_logs.append(s, svc, f"flood line {i}\n".encode())  # 13 bytes each: 52 in all
    # The last 25 bytes begin amid "flood line 2": from the first line that starts in them.
    assert read(platform, svc, 0) == ("flood line 3\n", 52)
    assert read(platform, svc, 39) == ("flood line 3\n", 52)  # a follower's offset: as it is
    with platform.store.session() as s:  # a line ends just before the bound: from the next one
        deployed_logs.append(s, svc, b"0123456789a\n")
    assert read(platform, svc, 0) == ("flood line 3\n0123456789a\n", 64)
    with platform.store.session() as s:  # one piece longer than the bound: kept from a line's start
        deployed_logs.append(s, svc, b"".join(f"piece {i:02d}\n".encode() for i in range(5)))
    assert read(platform, svc, 0) == ("piece 03\npiece 04\n", 109)


def test_a_character_cut_by_the_bound_is_not_mangled(
    platform: Platform, workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (svc,) = services(platform, workspace[0], 1)
    monkeypatch.setattr(deployed_logs, "MAX_HISTORY", 3)
    with platform.store.session() as s:
        deployed_logs.append(s, svc, b"ab")
        deployed_logs.append(s, svc, "éé".encode())  # 4 bytes: "ab" goes, the last 3 start mid-"é"
    assert read(platform, svc, 0) == ("é", 6)
    assert read(platform, svc, 4) == ("é", 6)


def test_the_history_of_earlier_servers_moves_in(platform: Platform, workspace: tuple[str, str]) -> None:
    (svc,) = services(platform, workspace[0], 1)
    folder = deployed_logs.directory(platform, svc)
    (folder / "history.log").write_text("before 0017\n")
    (folder / "c1.log").write_text(line("still running"))
    gone = deployed_logs.directory(platform, "svc_deleted")
    (gone / "history.log").write_text("of a deleted service\n")
    assert deployed_logs.import_files(platform) == 1
    assert read(platform, svc) == ("before 0017\n", 12)
    assert not (folder / "history.log").exists() and (folder / "c1.log").exists()
    assert not gone.exists()
    assert deployed_logs.import_files(platform) == 0  # again: nothing twice
    assert read(platform, svc) == ("before 0017\n", 12)


def test_a_stopping_server_lets_go_of_the_files_it_held_and_only_its_own(
    platform: Platform, workspace: tuple[str, str]
) -> None:
    first_pass(platform, workspace, "c9", line("one"))
    held = deployed_logs._files(platform)["c9"].file
    other = dataclasses.replace(platform)  # another server in the same process
    deployed_logs.keep_only(other, set())  # another platform of the process lets go of its own
    assert not held.closed
    Supervisor(platform).stop()
    assert held.closed and deployed_logs._files(platform) == {}
