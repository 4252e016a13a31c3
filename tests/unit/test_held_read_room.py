"""Reads out of a held sandbox reserve their whole size before any byte is kept, so reads side
by side are given their room or refused before reading (docs/sandboxes.md)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orch.errors import CapacityReached
from orch.sandbox import held
from orch.sandbox.held import ExecResult, RuncSandbox

SIZE = 256 * 1024  # each file read
CHUNK = 16 * 1024  # what the fake exec hands on at each round


def _reader(path: Path, turns: threading.Barrier, rounds: int) -> Any:
    """A sandbox whose `exec` runs held's read script on this machine's /bin/sh and hands its
    output on in CHUNK-byte parts, one part a round, each round passed by every reader together
    (`turns`): reads side by side, their bytes coming at once."""

    def exec(
        argv: Sequence[str], *, on_stdout: Callable[[bytes], None], should_stop: Callable[[], bool], **_: Any
    ) -> ExecResult:
        done = subprocess.run([*argv[:4], str(path)], capture_output=True, timeout=10, check=False)
        parts = [done.stdout[i : i + CHUNK] for i in range(0, len(done.stdout), CHUNK)]
        stopped = False
        for i in range(rounds):
            stopped = stopped or should_stop()
            if not stopped and i < len(parts):
                on_stdout(parts[i])
            turns.wait(10)
        return ExecResult(137 if stopped else done.returncode, 0.0, cancelled=stopped)

    return SimpleNamespace(exec=exec)


def test_reads_side_by_side_are_given_their_whole_room_or_refused_before_reading(tmp_path: Path) -> None:
    """F5: three reads of a file at once, in a workspace whose room holds two such files: each
    took room as its bytes came, so all three reached the bound partway and all were refused.
    Now a read's whole size is taken before its first byte: two are read whole, one refused."""
    path = tmp_path / "f"
    data = bytes(range(256)) * (SIZE // 256)
    path.write_bytes(data)
    lock, room = threading.Lock(), [2 * SIZE]

    def take(size: int) -> bool:
        with lock:
            if size > room[0]:
                return False
            room[0] -= size
            return True

    rounds = SIZE // CHUNK + 2
    turns = threading.Barrier(3)
    results: list[object] = [None] * 3

    def read(i: int) -> None:
        sandbox = _reader(path, turns, rounds)
        try:
            results[i] = RuncSandbox.read_file(sandbox, str(path), 4 * SIZE, take=take)
        except CapacityReached as e:
            results[i] = e

    threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(type(r).__name__ for r in results) == ["CapacityReached", "bytes", "bytes"]
    assert [r for r in results if isinstance(r, bytes)] == [data, data]


def test_a_read_larger_than_the_limit_is_refused_from_its_size(tmp_path: Path) -> None:
    """The size line alone says a file is past the limit: nothing of it is kept."""
    out = held._Collected(10, lambda size: True, sized=True)
    out(b"11\nabc")
    assert out.full() and out.ended() and out.data() == b""
    unsized = held._Collected(10, lambda size: True, sized=True)
    unsized(b"-\nabc")
    unsized(b"def")
    assert unsized.data() == b"abcdef" and not unsized.ended()
