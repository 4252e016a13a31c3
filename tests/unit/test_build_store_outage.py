"""A build under way when the store refuses for a while (a full disk under it, a PostgreSQL
restart): its progress and its "still building?" looks go on without the store; a write it cannot
go on without has it queued again and built once the store answers (its layers cached); a store
that refuses every time fails it saying so; a failure the store refused is recorded once it
answers (workers/builds.py, store/refusals.py). Found by a tester: a full disk under the store
left the environment `building` until a restart, and the log a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from orch.services.platform import Platform
from orch.store import refusals
from orch.store.schema import BuildRow
from orch.workers import builds
from tests.api.conftest import api, app  # noqa: F401 - the API's fixtures
from tests.refusing_store import FULL, no_pauses, refuse

GOOD = "FROM e2bdev/code-interpreter:latest\nRUN echo one\nRUN echo two\n"
BAD = "FROM e2bdev/code-interpreter:latest\nRUN exit 1\n"


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pauses(monkeypatch)


def said(statement: str) -> str:
    return " ".join(statement.split()).upper()


def progress(statement: str) -> bool:
    return said(statement).startswith("UPDATE BUILDS SET STEP=")


def ready(statement: str) -> bool:
    return said(statement).startswith("UPDATE BUILDS SET STATUS=") and "IMAGE=" in said(statement)


def failed(statement: str) -> bool:
    return said(statement).startswith("UPDATE BUILDS SET STATUS=") and "ERROR=" in said(statement)


def create(api: httpx.Client, name: str, dockerfile: str = GOOD) -> None:  # noqa: F811
    resp = api.post("/v1/environments", json={"name": name, "dockerfile": dockerfile})
    assert resp.status_code == 201, resp.text


def work_as_the_queue(platform: Platform) -> list[str]:
    """Each queued build, as the build queue's worker takes it; the builds it took."""
    taken = []
    for _pass in range(20):
        build_id = builds.claim(platform)
        if build_id is None:
            return taken
        taken.append(build_id)
        builds.run(platform, build_id)
    raise AssertionError("the queue did not empty")


def attempts(platform: Platform, build_id: str) -> int:
    with platform.store.session() as s:
        b = s.get(BuildRow, build_id)
        assert b is not None
        return b.attempts


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [
        (r.levelno, r.getMessage(), r.exc_info is not None)
        for r in caplog.records
        if r.name.startswith("orch")
    ]


def test_a_build_whose_progress_the_store_refuses_goes_on_and_is_ready(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create(api, "steady")
    refused = refuse(platform, 2, progress, FULL)
    with caplog.at_level(logging.INFO):
        taken = work_as_the_queue(platform)
    assert len(refused) == 2 and len(taken) == 1  # built once: not queued again
    env = api.get("/v1/environments/steady").json()
    assert env["status"] == "ready", env
    log = lines(caplog)
    assert not any(tb for _, _, tb in log), log  # no traceback
    away = [m for _, m, _ in log if "recording its progress failed: the store refused" in m]
    assert len(away) == 1, log  # once, not once a step
    assert "ready" in api.get("/v1/environments/steady/logs").json()["status"]


def test_a_build_whose_ready_the_store_refused_is_queued_again_and_ready(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create(api, "again")
    refused = refuse(platform, 1, ready, FULL)
    with caplog.at_level(logging.INFO):
        taken = work_as_the_queue(platform)
    assert len(refused) == 1 and len(taken) == 2 and taken[0] == taken[1]  # the same build, twice
    env = api.get("/v1/environments/again").json()
    assert env["status"] == "ready" and not env.get("error"), env
    assert attempts(platform, taken[0]) == 1  # a store's refusal is not a server stop's attempt
    log = lines(caplog)
    assert not any(tb for _, _, tb in log), log
    assert any("the store refused it under way" in m and "queued again" in m for _, m, _ in log), log


def test_a_store_that_refuses_every_time_fails_the_build_saying_so(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
) -> None:
    create(api, "never")
    refused = refuse(platform, 1 + refusals.REQUEUES, ready, FULL)
    taken = work_as_the_queue(platform)
    assert len(refused) == 1 + refusals.REQUEUES and len(taken) == 1 + refusals.REQUEUES
    env = api.get("/v1/environments/never").json()
    assert env["status"] == "failed", env
    assert env["error"].startswith("The store did not answer during the build (its disk is full)"), env
    # Built again once the store answers, as any failed build is.
    assert api.post("/v1/environments/never/build").status_code in (200, 201, 202)
    work_as_the_queue(platform)
    assert api.get("/v1/environments/never").json()["status"] == "ready"


def test_a_failure_the_store_refused_is_recorded_at_the_next_pass(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
) -> None:
    """Refused past every pause: held, and recorded at the build queue's next pass (the build
    stays `building` meanwhile, never for good)."""
    create(api, "broken", BAD)
    refuse(platform, 4, failed, FULL)  # the first try and the three again
    build_id = builds.claim(platform)
    assert build_id is not None
    builds.run(platform, build_id)
    assert api.get("/v1/environments/broken").json()["status"] == "building"
    assert builds.claim(platform) is None  # the next pass: the store takes it
    env = api.get("/v1/environments/broken").json()
    assert env["status"] == "failed" and "exit code 1" in env["error"], env


Unused = Callable[[], None]  # keeps the import of Callable honest for type checkers
