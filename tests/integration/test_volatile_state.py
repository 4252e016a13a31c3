"""The launcher's state directory on a tmpfs of its own where it is not on one (real mounts).

Each case works under a ramfs of its own: a file system that is not a tmpfs on any host, as the
root disk is for /run on some VM images."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.sandbox import rootfs, volatile


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    base = tmp_path / "disk"
    base.mkdir()
    rootfs.mount("ramfs", base, "ramfs", 0, "mode=0755")
    try:
        yield base
    finally:
        for point in rootfs.mounts_under(base):
            rootfs.umount(point)


def tmpfs_mounts(path: Path) -> int:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sum(1 for line in lines if line.split()[4] == str(path) and " - tmpfs " in line)


def test_an_empty_state_directory_becomes_a_tmpfs_and_keeps_the_helper(disk: Path) -> None:
    state = disk / "orch-runc"
    (state / "sandboxes").mkdir(parents=True)
    helper = state / "handoff-0123"
    helper.write_bytes(b"\x7fELF helper")
    helper.chmod(0o755)
    assert not volatile.on_tmpfs(state)

    assert volatile.ensure(state) is True
    assert volatile.on_tmpfs(state) and tmpfs_mounts(state) == 1
    assert helper.read_bytes() == b"\x7fELF helper" and helper.stat().st_mode & 0o777 == 0o755
    assert state.stat().st_mode & 0o777 == 0o700
    assert volatile.ensure(state) is True and tmpfs_mounts(state) == 1  # once


def test_live_state_is_never_hidden(disk: Path) -> None:
    state = disk / "orch-runc"
    live = state / "runc" / "orch-x-run_1" / "state.json"
    live.parent.mkdir(parents=True)
    live.write_text("{}")

    assert volatile.ensure(state) is False
    assert tmpfs_mounts(state) == 0 and live.read_text() == "{}"


def test_a_state_directory_on_a_tmpfs_already_gets_no_second_one(tmp_path: Path) -> None:
    base = tmp_path / "run"
    base.mkdir()
    rootfs.mount("tmpfs", base, "tmpfs", 0, "size=1m")
    try:
        assert volatile.ensure(base / "orch-runc") is True
        assert tmpfs_mounts(base) == 1 and tmpfs_mounts(base / "orch-runc") == 0
    finally:
        rootfs.umount(base)


ENSURE = (
    "import sys; from pathlib import Path; from orch.sandbox import volatile; "
    "volatile.ensure(Path(sys.argv[1]))"
)


def test_a_server_waits_for_the_one_mounting_then_sees_its_tmpfs(disk: Path) -> None:
    state = disk / "orch-runc"
    state.mkdir()
    with open(disk / ".orch-runc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another server, between its look and its mount
        other = subprocess.Popen([sys.executable, "-c", ENSURE, str(state)])
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(1.0)
        rootfs.mount("tmpfs", state, "tmpfs", 0, "size=1m")  # what that server mounts
    assert other.wait(60) == 0
    assert tmpfs_mounts(state) == 1
