"""The stream pump (sandbox/pump.py) on plain host processes: input, output and exit moved in
the calling thread, timeouts, cancels, and stderr held back until the start."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orch.sandbox import pump as pump_module
from orch.sandbox.pump import Pump


def pump(
    tmp_path: Path,
    script: str,
    stdin: bytes = b"",
    deadline: float | None = None,
    started: bool = True,
    hold_back: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[str, int, bytes, bytes, Pump]:
    pid_file = tmp_path / "pid"
    if started:
        pid_file.write_text("0")
    proc = subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    p = Pump(proc, stdin, out.append, err.append, pid_file, hold_back=hold_back)

    def kill() -> None:
        os.killpg(proc.pid, 9)

    try:
        why = p.run(deadline=deadline, should_stop=should_stop, kill=kill)
    finally:
        p.close()
    return why, proc.returncode, b"".join(out), b"".join(err), p


def test_large_stdin_and_stdout_move_together(tmp_path: Path) -> None:
    data = os.urandom(4 * 1024 * 1024)
    why, code, out, err, _p = pump(tmp_path, "cat; echo done >&2", stdin=data)
    assert (why, code, out, err) == ("", 0, data, b"done\n")


def test_no_thread_is_started(tmp_path: Path) -> None:
    before = threading.active_count()
    seen: list[int] = []

    def stop() -> bool:
        seen.append(threading.active_count())
        return False

    pump(tmp_path, "sleep 0.2; echo x", should_stop=stop)
    assert seen and max(seen) == before


def test_a_deadline_kills(tmp_path: Path) -> None:
    began = time.monotonic()
    why, code, out, _err, _p = pump(tmp_path, "echo before; sleep 30", deadline=time.monotonic() + 0.3)
    assert why == "timeout" and code == -9 and out == b"before\n"
    assert time.monotonic() - began < 5


def test_a_cancel_kills(tmp_path: Path) -> None:
    asked = time.monotonic() + 0.2
    why, code, _out, _err, _p = pump(tmp_path, "sleep 30", should_stop=lambda: time.monotonic() > asked)
    assert (why, code) == ("cancel", -9)


def test_the_exit_wakes_the_wait(tmp_path: Path) -> None:
    # A process that exits with no output pending: its pidfd ends a long wait at once.
    proc = subprocess.Popen(
        ["sh", "-c", "exec 1>&- 2>&-; sleep 0.2; exit 4"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p = Pump(proc, b"", lambda _: None, lambda _: None, tmp_path / "pid")
    try:
        began = time.monotonic()
        while not p._move(10.0):
            assert time.monotonic() - began < 5
        assert proc.returncode == 4 and time.monotonic() - began < 5
    finally:
        p.close()


def test_a_process_left_behind_does_not_hold_the_answer(tmp_path: Path) -> None:
    # The background sleep keeps stdout open after the shell exits: the pump stops at the exit.
    began = time.monotonic()
    why, code, out, _err, _p = pump(tmp_path, "(sleep 5; echo late) & echo now; exit 3")
    assert (why, code, out) == ("", 3, b"now\n") and time.monotonic() - began < 4


def test_stderr_before_the_start_is_held_back(tmp_path: Path) -> None:
    _why, code, _out, err, p = pump(tmp_path, "echo runtime-error >&2; exit 255", started=False)
    assert (code, err, p.held_back, p.started) == (255, b"", b"runtime-error\n", 0.0)


def test_without_hold_back_stderr_is_passed_on_at_once(tmp_path: Path) -> None:
    _why, code, _out, err, p = pump(
        tmp_path, "echo runtime-error >&2; exit 255", started=False, hold_back=False
    )
    assert (code, err, p.held_back) == (255, b"runtime-error\n", b"")


def test_the_start_is_stamped_when_the_pid_file_comes(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    _why, code, _out, _err, p = pump(tmp_path, f"sleep 0.2; echo 1 > {pid_file}; sleep 0.2", started=False)
    assert code == 0 and began + 0.2 <= p.started <= began + 0.35


def _moves_before_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Pump, float]:
    """A start that takes 0.3 s, its pid file written aside and renamed into place as runc does:
    how many times the pump woke before it saw the start."""
    moves: list[bool] = []
    real = Pump._move

    def counted(self: Pump, wait: float) -> bool:
        if not self.started:
            moves.append(True)
        return real(self, wait)

    monkeypatch.setattr(Pump, "_move", counted)
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    script = f"sleep 0.3; echo 1 > {tmp_path}/.pid; mv {tmp_path}/.pid {pid_file}; sleep 0.1"
    _why, code, _out, _err, p = pump(tmp_path, script, started=False)
    assert code == 0
    return len(moves), p, began


def test_the_pid_file_wakes_the_pump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start is seen as the file comes, without a look every 2 ms (~150 in 0.3 s): only the
    timeout and cancel checks (every 50 ms) and the file's own events wake the pump."""
    moves, p, began = _moves_before_start(tmp_path, monkeypatch)
    assert moves <= 15 and began + 0.3 <= p.started and p.watch is None  # let go of once started


def test_without_inotify_the_pid_file_is_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_inotify(**_: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(pump_module, "INotify", no_inotify)
    moves, p, began = _moves_before_start(tmp_path, monkeypatch)
    assert moves > 50 and began + 0.3 <= p.started
