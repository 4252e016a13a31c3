"""Followers of a service's output (the UI's service page and `orch service logs -f` long-poll
/services/{ref}/logs) under load: their waits hold none of the server's threads."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from orch.services import deployed as use_cases
from orch.services.platform import Platform
from orch.services.reconcile import reconcile
from tests.api.test_agents_runs import bundle as run_bundle
from tests.api.test_agents_runs import publish
from tests.api.test_run_followers import FOLLOWERS, _until
from tests.api.test_services import answering, deployed  # noqa: F401 - its fixture, autouse


def test_service_log_followers_hold_no_threads(
    api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = deployed(api, platform, tmp_path)
    reads: list[int] = []
    real = use_cases._logs

    def counted(*args: object) -> object:
        reads.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(use_cases, "_logs", counted)
    answers: list[dict] = []

    def follow() -> None:
        answers.append(api.get("/v1/services/web/logs", params={"wait": 30}).json())

    threads = [threading.Thread(target=follow, daemon=True) for _ in range(FOLLOWERS)]
    for t in threads:
        t.start()
    # Every follower has looked once, found nothing, and waits (more of them than pool threads).
    _until(lambda: len(reads) >= 2 * FOLLOWERS, f"{FOLLOWERS} followers waiting")

    # The rest of the API answers while every follower still waits.
    assert api.get("/v1/services/web").json()["state"] == "running"
    assert [s["name"] for s in api.get("/v1/services").json()] == ["web"]
    assert answers == []

    # The container's output reaches every follower well before its wait is over.
    log = platform.config.home / "logs" / "services" / svc["id"] / f"{svc['container']}.log"
    log.write_text("2026-01-01T00:00:00Z stdout F news\n")
    reconcile(platform)  # the supervisor's pass stores it
    for t in threads:
        t.join(20)
    assert len(answers) == FOLLOWERS and {a["text"] for a in answers} == {"news\n"}


def test_followers_answer_at_once_when_the_server_stops(
    api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed(api, platform, tmp_path)
    assert publish(api, "hello", run_bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    run_id = api.post("/v1/runs", json={"agent": "hello"}).json()["id"]  # stays queued: no workers
    reads: list[int] = []
    real = use_cases._logs
    monkeypatch.setattr(use_cases, "_logs", lambda *a: reads.append(1) or real(*a))
    answers: dict[str, int] = {}

    def follow(path: str) -> None:
        answers[path] = api.get(path, params={"wait": 30}).status_code

    paths = ["/v1/services/web/logs", f"/v1/runs/{run_id}/logs"]
    threads = [threading.Thread(target=follow, args=(p,), daemon=True) for p in paths]
    for t in threads:
        t.start()
    _until(lambda: len(reads) >= 2 and platform.followers(run_id) == 1, "both followers waiting")
    assert answers == {}
    platform.stopping.set()  # what `orch server` does when it is asked to stop
    for t in threads:
        t.join(10)  # a third of their wait
    assert answers == dict.fromkeys(paths, 200)
