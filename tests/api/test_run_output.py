"""A run's output lives in the store (services/run_output.py): stored in order, bounded, read from
any offset, by any server of the store; what files held before is moved in at start."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.models import RunStatus
from orch.server.app import create_app
from orch.services import output_store, run_output
from orch.services.platform import Platform
from orch.services.run_output import RunOutput
from orch.store.schema import RunOutputRow, RunRow
from orch.workers import runs as run_worker
from tests.api.conftest import client_of
from tests.api.test_agents_runs import bundle, publish
from tests.conftest import drain_runs, make_platform


@pytest.fixture
def queued(api: httpx.Client, tmp_path: Path) -> str:
    """A run of a hello agent, queued (nothing executes it unless a test does)."""
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    resp = api.post("/v1/runs", json={"agent": "hello"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


Stream = Callable[[bytes], None]


def rows(platform: Platform, run_id: str) -> list[tuple[str, int, bytes]]:
    with platform.store.session() as s:
        found = s.execute(
            select(RunOutputRow.stream, RunOutputRow.start, RunOutputRow.data)
            .where(RunOutputRow.run_id == run_id)
            .order_by(RunOutputRow.stream, RunOutputRow.start)
        )
        return [(n, at, bytes(d)) for n, at, d in found]


def read(platform: Platform, run_id: str, **offsets: int) -> dict[str, bytes]:
    with platform.store.session() as s:
        return run_output.read(s, run_id, offsets)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is stored until a test stores it (no flusher thread)."""
    monkeypatch.setattr(output_store.Flusher, "want", lambda self, out: None)


def test_pieces_are_stored_in_order_one_row_for_what_came_in_a_row(
    platform: Platform, queued: str, held: None
) -> None:
    out = RunOutput(platform, queued)
    out.write("stdout", b"ab")
    out.write("stdout", b"cd")
    out.write("stderr", b"x")
    out.write("stdout", "é!".encode())
    out.line("→ hello")
    assert rows(platform, queued) == []  # held in memory until stored
    output_store.flusher(platform).store_waiting()  # nothing waits: `want` was not told
    out.close()
    assert rows(platform, queued) == [
        ("log", 0, "→ hello\n".encode()),
        ("stderr", 0, b"x"),
        ("stdout", 0, b"abcd"),
        ("stdout", 4, "é!".encode()),
    ]
    assert read(platform, queued) == {
        "stdout": "abcdé!".encode(),
        "stderr": b"x",
        "log": "→ hello\n".encode(),
    }
    assert read(platform, queued, stdout=3, stderr=1)["stdout"] == "dé!".encode()
    assert read(platform, queued, stdout=3, stderr=1)["stderr"] == b""
    assert read(platform, queued, stdout=10**30, log=2**63) == {"stdout": b"", "stderr": b"x", "log": b""}
    with platform.store.session() as s:
        assert run_output.read(s, queued, {}, limit=3)["stdout"] == b"abc"
        assert run_output.sizes(s, queued) == {"stdout": 7, "stderr": 1, "log": len("→ hello\n".encode())}


@pytest.mark.parametrize(
    ("before", "kept"),
    [(1, b"F" * 7), (2, b"F" * 6), (3, b"F" * 5 + b"***"), (0, b"F" * 8)],  # 8 bytes fit
)
def test_a_cut_of_masked_output_never_splits_a_mask(
    api: httpx.Client, platform: Platform, queued: str, held: None, before: int, kept: bytes
) -> None:
    # The bound fell inside `***`: the stream ended `…FF**` or `…FF*`, which a reader could not
    # tell from the agent's own text (found by a tester).
    out = RunOutput(platform, queued)
    out.bound = 8
    out.mask(["s3cret"])
    out.write("stdout", b"F" * (8 - before) + b"s3cret" + b"tail")
    out.close()
    assert read(platform, queued)["stdout"] == kept
    # Unmasked streams are cut where the bound falls, whatever the bytes.
    plain = RunOutput(platform, api.post("/v1/runs", json={"agent": "hello"}).json()["id"])
    plain.bound = 8
    plain.write("stdout", b"F" * 7 + b"***")
    plain.close()
    assert read(platform, plain.run_id)["stdout"] == b"F" * 7 + b"*"


def test_a_reader_gets_what_is_stored_without_a_gap(platform: Platform, queued: str) -> None:
    with platform.store.session() as s:
        s.add(RunOutputRow(run_id=queued, stream="stdout", start=0, data=b"one "))
        s.add(RunOutputRow(run_id=queued, stream="stdout", start=8, data=b"three"))  # 4..8 not yet
    assert read(platform, queued)["stdout"] == b"one "
    assert read(platform, queued, stdout=2)["stdout"] == b"e "
    assert read(platform, queued, stdout=9)["stdout"] == b"hree"


def test_the_flusher_stores_every_runs_output_a_moment_after_it_comes(
    api: httpx.Client, platform: Platform, queued: str
) -> None:
    other = api.post("/v1/runs", json={"agent": "hello"}).json()["id"]
    first, second = RunOutput(platform, queued), RunOutput(platform, other)
    with platform.following(queued) as changes:
        first.write("stdout", b"1")
        second.write("stdout", b"2")
        deadline = time.monotonic() + 10
        while not (rows(platform, queued) and rows(platform, other)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rows(platform, queued) == [("stdout", 0, b"1")] and rows(platform, other) == [
            ("stdout", 0, b"2")
        ]
        assert changes() >= 1  # its followers were woken


def test_a_failed_store_keeps_the_pieces_for_the_next_in_order(
    platform: Platform, queued: str, held: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = RunOutput(platform, queued)
    out.write("stdout", b"first ")
    flusher = output_store.Flusher(platform)
    flusher._waiting[out] = None  # as `want` does, without its thread
    real = platform.store.session

    @contextmanager
    def broken() -> Iterator[object]:
        raise RuntimeError("the store is away")
        yield

    monkeypatch.setattr(platform.store, "session", broken)
    with pytest.raises(RuntimeError):
        flusher.store_waiting()
    monkeypatch.setattr(platform.store, "session", real)
    out.write("stdout", b"second")
    flusher.store_waiting()  # the failed pieces wait again, before the later ones
    assert rows(platform, queued) == [("stdout", 0, b"first second")]


def test_output_past_its_bound_is_cut_and_said(
    api: httpx.Client, platform: Platform, queued: str, held: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_output, "MAX_OUTPUT", 8)
    out = RunOutput(platform, queued)
    out.write("stdout", b"12345")
    out.write("stdout", b"6789ABC")
    out.write("stderr", b"ok")
    out.close()
    assert rows(platform, queued) == [("stderr", 0, b"ok"), ("stdout", 0, b"12345678")]
    logs = api.get(f"/v1/runs/{queued}/logs").json()
    assert (logs["stdout"], logs["stderr"], logs["truncated"]) == ("12345678", "ok", True)


def test_a_run_is_seen_ended_only_with_all_its_output(platform: Platform, queued: str, held: None) -> None:
    assert run_worker.claim(platform) == queued
    with platform.store.session() as s:
        s.execute(update(RunRow).where(RunRow.id == queued).values(status=RunStatus.RUNNING.value))
    out = RunOutput(platform, queued)
    out.write("stdout", b"the answer")
    run_worker._finish(platform, out, RunStatus.SUCCEEDED, 0, None)  # no flusher ran
    assert read(platform, queued)["stdout"] == b"the answer"
    with platform.store.session() as s:
        assert s.scalar(select(RunRow.status).where(RunRow.id == queued)) == "succeeded"


def test_another_server_of_the_store_answers_for_a_run(
    api: httpx.Client,
    platform: Platform,
    queued: str,
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
    workspace: tuple[str, str],
) -> None:
    def answer(
        spec: ContainerSpec, out: Callable[[bytes], None], err: Callable[[bytes], None]
    ) -> ContainerExit:
        out(b"hi from the run\n")
        err(b"a warning\n")
        return ContainerExit(0)

    fake_engine.behaviour = answer
    assert drain_runs(platform) == 1
    other = make_platform(tmp_path / "other-home", fake_engine, database_url=database_url)
    try:
        with client_of(create_app(other, workers=False), workspace[1]) as there:
            here = api.get(f"/v1/runs/{queued}/logs").json()
            assert (here["status"], here["stdout"], here["stderr"]) == (
                "succeeded",
                "hi from the run\n",
                "a warning\n",
            )
            assert "→ environment python" in here["log"]
            assert there.get(f"/v1/runs/{queued}/logs").json() == here
    finally:
        other.store.dispose()
    assert (
        not (tmp_path / "other-home" / "logs").exists()
        and not (platform.config.home / "logs" / "runs").exists()
    )


def test_output_files_of_an_earlier_server_move_into_the_store(platform: Platform, queued: str) -> None:
    where = platform.config.home / "logs" / "runs"
    (where / queued).mkdir(parents=True)
    (where / queued / "stdout").write_bytes(b"old answer\n")
    (where / queued / "log").write_bytes(b"old log\n")
    (where / queued / "truncated").touch()
    (where / "run_deleted_since").mkdir()
    (where / "run_deleted_since" / "stdout").write_bytes(b"nobody's\n")
    assert run_output.import_files(platform) == 1
    assert not where.exists()
    assert read(platform, queued) == {"stdout": b"old answer\n", "stderr": b"", "log": b"old log\n"}
    with platform.store.session() as s:
        assert s.scalar(select(func.count()).select_from(RunOutputRow)) == 2
    # Stopped half-way and started again: nothing is imported twice.
    (where / queued).mkdir(parents=True)
    (where / queued / "stdout").write_bytes(b"old answer\n")
    assert run_output.import_files(platform) == 0
    assert read(platform, queued)["stdout"] == b"old answer\n"


def test_the_environment_note_is_stored_with_the_move_to_running(
    platform: Platform, queued: str, fake_engine: FakeEngine, held: None
) -> None:
    """A follower woken by the move to running finds the note with it (one change, not two): the
    note does not wait for the flusher (`held`: none runs)."""
    seen: list[tuple[str, bytes]] = []

    def answer(
        spec: ContainerSpec, out: Callable[[bytes], None], err: Callable[[bytes], None]
    ) -> ContainerExit:
        with platform.store.session() as s:
            status = s.scalar(select(RunRow.status).where(RunRow.id == queued))
        seen.append((str(status), read(platform, queued)["log"]))
        return ContainerExit(0)

    fake_engine.behaviour = answer
    assert drain_runs(platform) == 1
    [(status, log)] = seen
    assert status == "running" and log.startswith("→ environment python".encode())
