"""POST /v1/runs with an `id` the caller chose (as `orch run` and `client.runs.create` do, so that
a create cut short can be cancelled by it): the run gets that id; a malformed one is 400, and one
any workspace's run has already is 409 (run ids are one namespace, server-wide:
docs/workspaces.md). Without `id` the server chooses one, as it always did."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from orch.models import new_id
from orch.services import runs, workspaces
from orch.services.platform import Platform
from orch.store.schema import RunRow
from tests.api.conftest import client_of
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_sandboxes import error


@pytest.fixture
def agent(api: httpx.Client, tmp_path: Path) -> str:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": ""})).status_code == 201
    return "hello"


def _count(platform: Platform) -> int:
    with platform.store.session() as s:
        return int(s.scalar(select(func.count()).select_from(RunRow)) or 0)


def test_a_chosen_id_is_the_run_s(api: httpx.Client, agent: str) -> None:
    chosen = new_id("run")
    resp = api.post("/v1/runs", json={"agent": agent, "id": chosen})
    assert resp.status_code == 201, resp.text
    assert resp.json()["id"] == chosen
    assert api.get(f"/v1/runs/{chosen}").json()["status"] == "queued"


def test_without_an_id_the_server_chooses_one(api: httpx.Client, agent: str) -> None:
    resp = api.post("/v1/runs", json={"agent": agent})
    assert resp.status_code == 201, resp.text
    assert runs.CHOSEN_ID.match(resp.json()["id"])


def test_an_id_taken_already_is_409(api: httpx.Client, agent: str, platform: Platform) -> None:
    chosen = new_id("run")
    assert api.post("/v1/runs", json={"agent": agent, "id": chosen}).status_code == 201
    said = error(api.post("/v1/runs", json={"agent": agent, "id": chosen}), 409)
    assert said == f"A run with the id {chosen} exists already."
    assert "Choose another id" in api.post("/v1/runs", json={"agent": agent, "id": chosen}).json()["fix"]
    assert _count(platform) == 1


def test_an_id_of_another_workspace_s_run_is_409(
    app: FastAPI, api: httpx.Client, agent: str, platform: Platform, tmp_path: Path
) -> None:
    with platform.store.session() as s:
        _ws, token = workspaces.create_workspace(s, "other")
    chosen = new_id("run")
    with client_of(app, token) as other:
        assert publish(other, "theirs", bundle(tmp_path / "other", {"main.py": ""})).status_code == 201
        assert other.post("/v1/runs", json={"agent": "theirs", "id": chosen}).status_code == 201
    said = error(api.post("/v1/runs", json={"agent": agent, "id": chosen}), 409)
    assert said == f"A run with the id {chosen} exists already."
    assert api.get(f"/v1/runs/{chosen}").status_code == 404  # still invisible here
    assert _count(platform) == 1


@pytest.mark.parametrize(
    "bad",
    [
        "run_../../etc",
        "sbx_0123456789",
        "run_012345678",
        "run_0123456789".upper(),
        "run_01234567io",
        "",
        "run_01234567890",  # one too long: the sentence, not the request model's 422
    ],
)
def test_a_malformed_id_is_400(api: httpx.Client, agent: str, platform: Platform, bad: str) -> None:
    said = error(api.post("/v1/runs", json={"agent": agent, "id": bad}), 400)
    assert said == f"The id {bad!r} is not a run id as the server makes them."
    assert _count(platform) == 0
