"""A new name may not start like its kind's ids: a reference that does is looked up as an id, so
such a name could never be reached, and a command given it would act on the thing with that id."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.test_agents_runs import bundle, publish
from tests.api.test_services import deploy

GOOD = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"


def refused(resp: httpx.Response, what: str, prefix: str) -> None:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["message"].startswith(what) and "starts like an id" in body["message"]
    assert f"does not start with '{prefix}'" in body["fix"]


def test_an_environment_named_like_an_id_is_refused(api: httpx.Client) -> None:
    first = api.post("/v1/environments", json={"name": "a", "dockerfile": GOOD}).json()
    for name in (first["id"], "env_python_ml", "env_x"):
        refused(api.post("/v1/environments", json={"name": name, "dockerfile": GOOD}), "Environment", "env_")
    assert [e["name"] for e in api.get("/v1/environments").json() if e["kind"] == "custom"] == ["a"]
    assert api.post("/v1/environments", json={"name": "my-env_x", "dockerfile": GOOD}).status_code == 201


def test_an_agent_named_like_an_id_is_refused(api: httpx.Client, tmp_path: Path) -> None:
    data = bundle(tmp_path, {"main.py": "print('hi')\n"})
    assert publish(api, "hello", data).status_code == 201
    hello = api.get("/v1/agents/hello").json()
    refused(publish(api, hello["id"], data), "Agent name", "agt_")
    assert [a["name"] for a in api.get("/v1/agents").json()] == ["hello"]
    assert [v["version"] for v in api.get("/v1/agents/hello").json()["versions"]] == [1]


def test_a_service_named_like_an_id_is_refused(api: httpx.Client, tmp_path: Path) -> None:
    data = bundle(tmp_path, {"main.py": "print('hi')\n"})
    refused(deploy(api, "svc_0123456789", data), "Service name", "svc_")
    assert api.get("/v1/services").json() == []


def test_a_workspace_named_like_an_id_is_refused(api: httpx.Client) -> None:
    refused(api.post("/v1/workspaces", json={"name": "ws_0123456789"}), "Workspace name", "ws_")
    assert "ws_0123456789" not in {w["name"] for w in api.get("/v1/workspaces").json()}
