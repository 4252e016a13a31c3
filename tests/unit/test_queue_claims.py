"""Several workers, and a second server on the same database, claim queued builds and runs: each
row is taken exactly once (on SQLite and on a real PostgreSQL server)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from orch.models import RunStatus, new_id
from orch.services import builds, run_worker
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store import Store
from orch.store.schema import RunRow

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
