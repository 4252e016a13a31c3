"""Several workers, and a second server on the same database, claim queued builds and runs: each
row is taken exactly once (on SQLite and on a real PostgreSQL server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orch.config import Config
from orch.models import RunStatus, new_id
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store import Store
from orch.store.schema import BuildRow, RunRow
from orch.workers import builds
from orch.workers import runs as run_worker

ROWS = 20
THREADS = 4  # per server


@pytest.fixture
def second_server(platform: Platform) -> Iterator[Platform]:
    """Another platform on the same database, as a second `orch server` process would be."""
    other = Platform(platform.config, Store(platform.store.url), platform.engine)
    yield other
    other.store.dispose()


def claim_all(servers: list[Platform], claim: Callable[[Platform], str | None]) -> list[str]:
    """Start THREADS workers per server at once; each claims until its queue looks empty."""
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS * len(servers))

    def worker(p: Platform) -> None:
        start.wait()
        while (row_id := claim(p)) is not None:
            with lock:
                claimed.append(row_id)

    threads = [threading.Thread(target=worker, args=(p,)) for p in servers for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return claimed


def test_builds_are_claimed_once(
    platform: Platform, second_server: Platform, workspace: tuple[str, str]
) -> None:
    queued = {
        envs.create(
            platform, workspace[0], f"e{i}", f"FROM e2bdev/code-interpreter:latest\nRUN echo {i}\n"
        ).build_id
        for i in range(ROWS)
    }
    assert len(queued) == ROWS
    claimed = claim_all([platform, second_server], builds.claim)
    assert sorted(claimed) == sorted(queued)  # all of them, none twice
    assert builds.claim(platform) is None


def test_runs_are_claimed_once(
    platform: Platform, second_server: Platform, workspace: tuple[str, str]
) -> None:
    with platform.store.session() as s:
        rows = [
            RunRow(
                id=new_id("run"),
                workspace_id=workspace[0],
                agent_id="agt_x",
                agent_version_id="ver_x",
                status=RunStatus.QUEUED.value,
            )
            for _ in range(ROWS)
        ]
        s.add_all(rows)
        queued = {r.id for r in rows}
    claimed = claim_all([platform, second_server], run_worker.claim)
    assert sorted(claimed) == sorted(queued)
    with platform.store.session() as s:
        attempts = {r.status: r.attempts for r in s.query(RunRow)}
    assert attempts == {RunStatus.STARTING.value: 1}


def test_a_starting_server_settles_only_what_it_left(
    platform: Platform, workspace: tuple[str, str], tmp_path: Path
) -> None:
    """Two servers of two platforms (two ORCH_HOMEs) on one database: when one starts again, it
    settles the build and run it had claimed itself, and leaves the other server's running."""
    other_home = Config(tmp_path / "other-home", platform.config.values)
    other = Platform(other_home, Store(platform.store.url), platform.engine)
    assert other.instance != platform.instance
    try:
        dockerfile = "FROM e2bdev/code-interpreter:latest\nRUN echo {}\n"
        ws = workspace[0]
        build_ids = [envs.create(platform, ws, n, dockerfile.format(n)).build_id for n in ("mine", "theirs")]
        assert [builds.claim(platform), builds.claim(other)] == build_ids
        with platform.store.session() as s:
            run_ids = [new_id("run") for _ in range(2)]
            s.add_all(
                RunRow(id=i, workspace_id=workspace[0], agent_id="a", agent_version_id="v", status="queued")
                for i in run_ids
            )
        assert [run_worker.claim(platform), run_worker.claim(other)] == run_ids

        builds.recover(platform)
        run_worker.recover(platform)
        with platform.store.session() as s:
            assert [s.get(BuildRow, b).status for b in build_ids] == ["queued", "building"]  # type: ignore[union-attr]
            assert [s.get(RunRow, r).status for r in run_ids] == ["queued", "starting"]  # type: ignore[union-attr]
        builds.recover(other)
        run_worker.recover(other)
        with platform.store.session() as s:
            assert [s.get(BuildRow, b).status for b in build_ids] == ["queued", "queued"]  # type: ignore[union-attr]
            assert [s.get(RunRow, r).status for r in run_ids] == ["queued", "queued"]  # type: ignore[union-attr]
    finally:
        other.store.dispose()
