"""The tests' throwaway PostgreSQL (tests/postgres.py): a killed test run's server and cluster
are stopped and removed by the next run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import OWNER, PREFIX, UNOWNED_AGE, find_bin, sweep

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import time
from tests.postgres import running
with running() as server:
    print(server.dir, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def tmp_root() -> Iterator[Path]:
    """A temporary directory the postgres user can reach (pytest's own are root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="orch-pg-test-"))
    root.chmod(0o755)
    yield root
    sweep(find_bin(), root)
    shutil.rmtree(root, ignore_errors=True)


def _postmaster(cluster: Path) -> int | None:
    """The pid of the cluster's running server, if one runs."""
    try:
        pid = int((cluster / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def test_a_killed_runs_server_and_cluster_are_removed_by_the_next_run(tmp_root: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=ROOT,
        env={**os.environ, "ORCH_TEST_POSTGRES_DIR": str(tmp_root), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        cluster = Path(holder.stdout.readline().strip())
        assert cluster.parent == tmp_root and cluster.name.startswith(PREFIX)
        assert (cluster / OWNER).read_text() == str(holder.pid)
        assert sweep(find_bin(), tmp_root) == []  # its owner runs: left alone
        assert _postmaster(cluster) is not None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    server = _postmaster(cluster)
    assert server is not None  # the killed run could not stop it
    assert sweep(find_bin(), tmp_root) == [cluster]
    assert not cluster.exists()
    deadline = time.monotonic() + 30
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server)


def test_a_cluster_without_owner_is_a_leftover_only_once_old(tmp_root: Path) -> None:
    young, old = tmp_root / f"{PREFIX}young", tmp_root / f"{PREFIX}old"
    for d in (young, old):
        d.mkdir()
    an_hour_ago = time.time() - UNOWNED_AGE - 60
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert sweep(find_bin(), tmp_root) == [old]  # the young one may be a run's, before its owner
    assert young.exists() and not old.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
