"""Runs a page at a time: GET /v1/runs?before=RUN, the client's runs.list(before=), and
`orch runs list --before` (the UI's pages: tests/api/test_ui_pages.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from typer.testing import Result

from orch.client import Client
from orch.services.platform import Platform
from orch.store.schema import RunRow
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli_runs import cli as cli  # a fixture


@pytest.fixture
def queued(api: httpx.Client, platform: Platform, tmp_path: Path) -> list[str]:
    """Seven queued runs, newest first; three share one queued_at (ties go by id)."""
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    ids = [api.post("/v1/runs", json={"agent": "hello"}).json()["id"] for _ in range(7)]
    with platform.store.session() as s:
        same = s.get(RunRow, ids[2])
        assert same is not None
        s.execute(update(RunRow).where(RunRow.id.in_(ids[3:6])).values(queued_at=same.queued_at))
    listed = [r["id"] for r in api.get("/v1/runs", params={"limit": 7}).json()]
    assert sorted(listed) == sorted(ids)
    return listed


@pytest.fixture
def client(api: httpx.Client, workspace: tuple[str, str]) -> Iterator[Client]:
    with Client("http://testserver", workspace[1], transport=api._transport) as c:
        yield c


def test_pages_of_runs_hold_every_run_once_in_order(
    api: httpx.Client, client: Client, queued: list[str], cli: Callable[..., Result]
) -> None:
    pages: list[list[str]] = []
    before: str | None = None
    for _ in range(5):  # 7 runs by 3: three pages, then none
        params = {"limit": 3, **({"before": before} if before else {})}
        page = [r["id"] for r in api.get("/v1/runs", params=params).json()]
        if not page:
            break
        pages.append(page)
        before = page[-1]
    assert [len(p) for p in pages] == [3, 3, 1] and [i for p in pages for i in p] == queued
    # The client and the CLI page the same way.
    assert [r.id for r in client.runs.list(limit=3, before=queued[2])] == queued[3:6]
    res = cli("runs", "list", "--limit", "3", "--before", queued[5], "--json")
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in json.loads(res.stdout)] == queued[6:]
    unknown = api.get("/v1/runs", params={"before": "run_nothere00"})
    assert (
        unknown.status_code == 404
        and unknown.json()["message"] == "No run 'run_nothere00' in this workspace."
    )
