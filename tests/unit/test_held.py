"""The logic of held sandboxes without a runtime: the process-tree kill, the runtime's messages,
paths, limits and the output cap (the stream pump: test_pump.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from orch.errors import InvalidInput
from orch.sandbox import held
from orch.services import sandboxes


def test_kill_tree_takes_the_group_and_the_tree_but_not_the_ones_that_left(tmp_path: Path) -> None:
    marker = tmp_path / "left"
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            f"sleep 300 & (sleep 301 &) & (setsid sh -c 'echo $$ > {marker}; exec sleep 302' &); sleep 303",
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 5
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    left = int(marker.read_text())
    group = [p for p, (_parent, pgid) in held._host_processes().items() if pgid == proc.pid]
    assert len(group) >= 3  # the shell, sleep 300, the orphaned sleep 301 (sleep 303 too)
    killed = held.kill_tree(proc.pid, held._namespace(os.getpid()))
    proc.wait(5)
    assert killed >= 3
    deadline = time.monotonic() + 5
    while [p for p, (_parent, pgid) in held._host_processes().items() if pgid == proc.pid]:
        assert time.monotonic() < deadline, "the group outlived the kill"
        time.sleep(0.05)
    assert left in held._host_processes()  # a new session of its own, orphaned: left running
    os.kill(left, 9)


def test_kill_tree_touches_nothing_of_another_namespace() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert held.kill_tree(proc.pid, "pid:[1]") == 0
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_below_walks_children() -> None:
    parents = {2: 1, 3: 2, 4: 3, 5: 1, 6: 99}
    assert held._below(2, parents) == {2, 3, 4}


def test_runtime_messages_lose_their_log_prefix() -> None:
    line = 'time="2026-12-02T00:46:54Z" level=error msg="exec failed: chdir to cwd (\\"/x\\") failed"'
    assert held._runtime_message(line) == 'exec failed: chdir to cwd ("/x") failed'
    assert held._runtime_message("plain words") == "plain words"


@pytest.mark.parametrize(
    ("given", "found"),
    [
        ("a.txt", "/home/user/a.txt"),
        ("dir/a", "/home/user/dir/a"),
        ("/etc/hosts", "/etc/hosts"),
        ("../x", "/home/user/../x"),
    ],
)
def test_paths_are_absolute_or_under_home(given: str, found: str) -> None:
    assert sandboxes.path_in_sandbox(given) == found


@pytest.mark.parametrize(
    ("given", "said"),
    [("", "The path is empty."), ("a\x00b", "NUL"), ("a" * 4097, "longer than 4096 bytes")],
)
def test_bad_paths(given: str, said: str) -> None:
    with pytest.raises(InvalidInput, match=said):
        sandboxes.path_in_sandbox(given)


def test_limits_are_read_as_the_manifest_reads_them() -> None:
    default = sandboxes.limits(None, None)
    assert (default.memory_bytes, default.cpus, default.pids) == (512 * 2**20, 1.0, 256)
    assert sandboxes.limits("1Gi", 2).memory_bytes == 2**30
    with pytest.raises(
        InvalidInput, match=r"^memory: '65Gi' is more than the maximum of 64 GiB\. Use at most 64Gi\.$"
    ):
        sandboxes.limits("65Gi", None)
    with pytest.raises(InvalidInput, match=r"^cpus: 'many' is not a number of CPUs\."):
        sandboxes.limits(None, "many")  # type: ignore[arg-type]


def test_the_output_cap_counts_what_it_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandboxes, "MAX_OUTPUT", 4)
    cap = sandboxes.Capped()
    cap(b"ab")
    cap(b"cdef")
    assert (cap.text(), cap.size, cap.cut) == ("abcd", 6, True)


def test_file_errors_are_sentences() -> None:
    e = held._file_error("read", "/x", "cat: /x: No such file or directory", 1)
    assert (type(e).__name__, e.message) == ("NotFound", "No file /x in the sandbox.")
    e = held._file_error("write", "/etc/x", "/bin/sh: 1: cannot create /etc/x: Permission denied", 2)
    assert e.message == "Could not write /etc/x in the sandbox: Permission denied."
    e = held._file_error("read", "/x", "orch: cat: command not found", 127)
    assert e.message == "The sandbox's image has no cat to read files with."
