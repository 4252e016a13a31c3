"""The API's contract at its edges (in-process, both stores): request bodies are bounded and read
only after the token is checked, numbers are numbers, HEAD is answered, and requests that race
on one name or one row get the answer a sequential one gets (docs/architecture.md#request-bodies,
#races)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from orch.errors import OrchError
from orch.server.app import create_app
from orch.services import agent_deletes, agents, runs
from orch.services import environments as envs
from orch.services import workspaces as ws_service
from orch.services.platform import Platform
from orch.store.schema import AgentRow, AgentVersionRow, RunRow
from tests.api.conftest import client_of
from tests.api.test_agents_runs import bundle, publish
from tests.asgi import asgi_scope

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo dup\n"


# ---- raw ASGI calls: what the app read of a body ------------------------------------------------


def call(
    app: FastAPI, method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, dict[str, Any], int]:
    """Call `app` with a body sent as `chunks` (Content-Length as `headers` say): its status, its
    JSON body, and how many of the chunks it asked for."""
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if asked < len(chunks):
            asked += 1
            return {"type": "http.request", "body": chunks[asked - 1], "more_body": asked < len(chunks)}
        await anyio.sleep_forever()  # as a client that keeps the connection open
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = asgi_scope(method, path, headers)

    async def main() -> None:
        with anyio.fail_after(60):
            await app(scope, receive, send)

    anyio.run(main)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), asked


MiB = 1024 * 1024


@pytest.fixture
def small(platform: Platform) -> FastAPI:
    """The app with a request body limit of 64 KiB."""
    platform.config = platform.config.with_values(request_body_limit=64 * 1024)
    return create_app(platform, workers=False)


def test_a_body_is_not_read_before_the_token_is_checked(small: FastAPI, workspace: tuple[str, str]) -> None:
    """A tester's 400 MB body without a valid token took the server past 1 GB: it was read and
    parsed, then refused with 401. Now not one chunk of it is asked for."""
    big = [b"x" * MiB] * 8
    for headers in ({}, {"Authorization": "Bearer nope"}):
        for path in ("/v1/environments/validate", "/v1/environments", "/v1/workspaces"):
            status, body, asked = call(
                small, "POST", path, {"content-type": "application/json", **headers}, big
            )
            assert (status, body["error"], asked) == (401, "unauthorized", 0), (path, headers)
    status, body, asked = call(
        small, "PUT", "/v1/secrets/BIG", {"content-type": "application/json"}, [b'{"value": "', *big]
    )
    assert (status, asked) == (401, 0)


def test_a_body_past_the_limit_is_refused_before_or_as_it_is_read(
    small: FastAPI, workspace: tuple[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {workspace[1]}", "content-type": "application/json"}
    chunks = [b'{"dockerfile": "'] + [b"a" * 16 * 1024] * 64 + [b'"}']  # 1 MiB in 66 chunks
    size = sum(len(c) for c in chunks)
    # Announced: refused before a byte is read.
    status, body, asked = call(
        small, "POST", "/v1/environments/validate", {**auth, "content-length": str(size)}, chunks
    )
    assert (status, body["error"], asked) == (413, "too_large", 0)
    assert body["message"] == "The request body is larger than the 64 KiB the server reads for this route."
    assert body["fix"]
    # Chunked (no length): refused once past the bound, the rest never read.
    status, body, asked = call(small, "POST", "/v1/environments/validate", auth, chunks)
    assert (status, body["error"]) == (413, "too_large") and asked <= 6, asked
    # Within it: served.
    status, body, _ = call(
        small, "POST", "/v1/environments/validate", auth, [json.dumps({"dockerfile": DOCKERFILE}).encode()]
    )
    assert status == 200 and body["ok"] is True


def test_a_plain_token_is_refused_on_an_admin_route_before_its_body_is_read(
    small: FastAPI, platform: Platform
) -> None:
    with platform.store.session() as s:
        ws, _admin = ws_service.create_workspace(s, "team")
        plain = ws_service.issue_token(s, ws.id, "plain")
    name = [b'{"name": "'] + [b"a" * MiB] * 4 + [b'"}']
    headers = {"Authorization": f"Bearer {plain}", "content-type": "application/json"}
    status, body, asked = call(small, "POST", "/v1/workspaces", headers, name)
    assert (status, asked) == (403, 0)
    assert body["message"].startswith(
        "Only an admin token can create workspaces; this token is a plain token"
    )


def test_uploads_keep_their_own_bounds_past_the_json_limit(
    small: FastAPI, workspace: tuple[str, str], tmp_path: Path
) -> None:
    data = bundle(tmp_path, {"main.py": "print('hi')\n", "blob.txt": os.urandom(96 * 1024).hex()})
    assert len(data) > 64 * 1024
    with client_of(small, workspace[1]) as api:
        resp = publish(api, "big", data)
        assert resp.status_code == 201, resp.text
        # A JSON body past the limit, through the whole stack: 413 with orch's body.
        resp = api.put("/v1/secrets/BIG", json={"value": "x" * 70 * 1024})
        assert resp.status_code == 413 and resp.json()["error"] == "too_large"


# ---- numbers, nesting, HEAD ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"agent": "hello", "timeout": True}, "timeout must be a whole number"),
        ({"agent": "hello", "timeout": "60"}, "timeout must be a whole number"),
        ({"agent": "hello", "timeout": 1.5}, "timeout must be a whole number"),
        ({"agent": "hello", "input": 5}, "input must be text"),
    ],
)
def test_numbers_are_numbers(api: httpx.Client, body: dict[str, Any], said: str) -> None:
    """`"timeout": true` made a one-second run or sandbox: pydantic took true as 1."""
    resp = api.post("/v1/runs", json=body)
    assert resp.status_code == 422 and said in resp.json()["message"], resp.text
    resp = api.post("/v1/environments", json={"name": "e", "dockerfile": DOCKERFILE, "no_cache": 1})
    assert resp.status_code == 422 and "no_cache must be true or false" in resp.json()["message"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"agent": "a", "input": {"x": NaN}}', "NaN is not a JSON value at character 30"),
        (
            '{"agent": "a", "input": "NaN", "env": {"A": -Infinity}}',
            "-Infinity is not a JSON value at character 44",
        ),
        ('{"agent": "a", "input": [Infinity]}', "Infinity is not a JSON value at character 25"),
        # Python's json kept the last of a key given twice, silently (found by a tester).
        (
            '{"agent": "a", "timeout": 10, "timeout": 600}',
            "an object names the key 'timeout' twice at character 30",
        ),
        (
            '{"agent": "a", "env": {"A": "1", "B": "2", "A": "3"}}',
            "an object names the key 'A' twice at character 43",
        ),
    ],
)
def test_nan_and_infinity_are_not_json(api: httpx.Client, text: str, said: str) -> None:
    """Python's json reads NaN and Infinity: a run's input holding one reached its agent as text
    that JSON.parse refuses. The CLI refused it; the API now does too, and says where."""
    resp = api.post("/v1/runs", content=text, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["message"] == f"The request is not valid: the body is not valid JSON ({said}).", (
        resp.text
    )
    assert api.get("/v1/runs").json() == []  # nothing was queued


@pytest.mark.parametrize(
    ("method", "path", "text", "said"),
    [
        ("POST", "/v1/runs", '{"agent": "a", "input": "\\ud800"}', "(\\ud800)"),
        ("POST", "/v1/runs", '{"agent": "a", "input": "{}", "env": {"X": "a\\uDFFF"}}', "(\\udfff)"),
        ("POST", "/v1/runs", '{"agent": "a", "input": "\\ud83d\\ude00 \\ude00"}', "(\\ude00)"),
        ("PUT", "/v1/secrets/S", '{"value": "\\udc00"}', "(\\udc00)"),
        ("POST", "/v1/sandboxes", '{"env": {"k\\ud800": "v"}}', "(\\ud800)"),
    ],
)
def test_a_lone_surrogate_is_not_json_text(
    api: httpx.Client, method: str, path: str, text: str, said: str
) -> None:
    """JSON's escapes can write half a UTF-16 pair, which no UTF-8 text holds: a run's input or
    env value holding one was a 500 (UnicodeEncodeError). Any body's string, keys too, is
    refused, and nothing changes; a whole pair (an emoji) is text."""
    resp = api.request(method, path, content=text, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    message = resp.json()["message"]
    assert message.startswith("The request is not valid: the body is not valid JSON (a string holds a lone ")
    assert f"surrogate {said}, which is not UTF-8 text at character " in message, message
    assert api.get("/v1/runs").json() == [] and api.get("/v1/secrets").json() == []


def test_a_whole_surrogate_pair_is_text(api: httpx.Client) -> None:
    resp = api.put(
        "/v1/secrets/S", content='{"value": "\\ud83d\\ude00"}', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200, resp.text
    api.delete("/v1/secrets/S")


def test_the_body_models_are_strict() -> None:
    """Every request body (deps.Body) takes its fields' JSON types only."""
    from orch.server.api.sandboxes import CreateSandbox, ExecCommand

    for model, field, value in [
        (CreateSandbox, "timeout", True),
        (CreateSandbox, "cpus", True),
        (CreateSandbox, "timeout", "60"),
        (CreateSandbox, "cpus", "1.5"),
        (ExecCommand, "timeout", False),
    ]:
        extra = {"command": ["true"]} if model is ExecCommand else {}
        with pytest.raises(ValueError, match=field):
            model.model_validate({**extra, field: value})
    assert CreateSandbox.model_validate({"memory": "512Mi", "cpus": 1, "timeout": 60}).cpus == 1.0


def test_json_nested_too_deeply_says_so(api: httpx.Client) -> None:
    deep = '{"value":' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = api.put("/v1/secrets/DEEP", content=deep, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"] == (
        "The request body could not be read: its JSON nests arrays and objects too deeply."
    )


def test_head_is_answered_where_get_is(api: httpx.Client) -> None:
    for path in ("/healthz", "/v1/secrets", "/v1/environments"):
        got, head = api.get(path), api.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-length"] == got.headers["content-length"]
    resp = api.head("/v1/runs/cancel-me/cancel")  # a POST route: 405, as GET gets
    assert resp.status_code == 405
    assert api.get("/v1/runs/x/cancel").json()["message"] == "/v1/runs/x/cancel does not take GET."


def test_a_url_the_http_parser_refuses_gets_orchs_error_body(served: tuple[str, str]) -> None:
    """Past what httptools reads in a URL, uvicorn answered text/plain "Invalid HTTP request
    received."; orch's protocol answers with its JSON body."""
    url = urlsplit(served[0])
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"GET /v1/agents/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["error"] == "invalid_input" and "URL" in error["message"] and error["fix"]


# ---- names taken at the same moment -------------------------------------------------------------


def test_a_workspace_name_taken_between_the_check_and_the_insert_is_a_409(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty creates of one name at once: some passed the check before any had inserted and
    lost at the unique index, answered 500 IntegrityError. Here the check is made to pass."""
    assert api.post("/v1/workspaces", json={"name": "dupws"}).status_code == 201
    sequential = api.post("/v1/workspaces", json={"name": "dupws"})
    monkeypatch.setattr(ws_service, "_check_free", lambda s, name: None)  # as if not made yet
    raced = api.post("/v1/workspaces", json={"name": "dupws"})
    assert sequential.status_code == raced.status_code == 409
    assert raced.json() == sequential.json()
    assert raced.json()["message"] == "A workspace named dupws exists already."


def test_an_environment_name_taken_between_the_check_and_the_insert_is_a_409(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"name": "dupenv", "dockerfile": DOCKERFILE}
    assert api.post("/v1/environments", json=body).status_code == 201
    sequential = api.post("/v1/environments", json=body)
    monkeypatch.setattr(envs, "_check_free", lambda s, ws, name: None)
    raced = api.post("/v1/environments", json=body)
    assert sequential.status_code == raced.status_code == 409
    assert raced.json() == sequential.json()
    assert raced.json()["message"] == "An environment named 'dupenv' already exists in this workspace."


def test_any_unique_key_broken_by_a_race_is_a_409_not_a_500(platform: Platform) -> None:
    """The store answers every unique key's violation as a conflict (services, nodes, ...)."""
    from orch.store.db import Clash

    with platform.store.session() as s:
        _ws, _ = ws_service.create_workspace(s, "one")
    with pytest.raises(Clash) as raised, platform.store.session() as s:
        ws_service.create_workspace(s, "one")
    assert raised.value.http_status == 409 and raised.value.fix


def test_a_first_publish_racing_another_makes_a_version_of_the_agent_the_other_made(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = bundle(tmp_path, {"main.py": "print('hi')\n"})
    assert publish(api, "first", data).status_code == 201  # the bundle is stored: no write before the race
    real, real_hold = agents.new_id, agents.hold
    raced: list[str] = []

    def the_other() -> None:  # another publish of "twin" commits its agent now
        if not raced:
            with platform.store.session() as s:
                s.add(
                    AgentRow(
                        id=real("agt"),
                        workspace_id=workspace[0],
                        name="twin",
                        latest_version=0,
                        last_published=0,
                    )
                )
            raced.append("twin")

    def new_id(prefix: str) -> str:  # PostgreSQL: after this one found no agent of the name
        if prefix == "agt":
            the_other()
        return real(prefix)

    def hold(s: Any, *args: Any, **kwargs: Any) -> None:  # SQLite: its first hold takes the one writer
        the_other()
        real_hold(s, *args, **kwargs)

    if platform.store.db.dialect.name == "sqlite":
        monkeypatch.setattr(agents, "hold", hold)
    else:
        monkeypatch.setattr(agents, "new_id", new_id)
    resp = publish(api, "twin", data)
    assert resp.status_code == 201, resp.text
    assert raced and resp.json()["version"]["version"] == 1
    assert [a["name"] for a in api.get("/v1/agents").json()].count("twin") == 1


# ---- check-then-act on one row ------------------------------------------------------------------


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except OrchError as e:
            outcome.append(e)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def _done_or_waiting(
    platform: Platform, thread: threading.Thread, reached: threading.Event | None = None
) -> None:
    """Until `thread` has ended, or waits for a lock of this test's database (PostgreSQL), or
    has reached `reached` (the call it may wait in)."""
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        if reached is not None and reached.is_set():
            return
        if platform.store.db.dialect.name == "postgresql":
            with platform.store.db.connect() as c:
                waiting = c.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                ).scalar()
            if waiting:
                return
        thread.join(0.02)
    assert time.monotonic() < deadline


def test_deleting_an_agent_while_a_run_of_it_is_created_loses_one_or_the_other(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delete between a run's reads and its insert: the run was answered 201, then deleted
    with the agent (its worker crashed on the missing version)."""
    assert publish(api, "quick", bundle(tmp_path, {"main.py": "print('q')\n"})).status_code == 201
    real = runs.latest_version
    deleting: list[Any] = []

    def latest_version(s: Any, agent: Any) -> Any:
        version = real(s, agent)
        thread, outcome = _in_thread(lambda: agent_deletes.delete_agent(platform, workspace[0], "quick"))
        _done_or_waiting(platform, thread)
        deleting.extend([thread, outcome])
        return version

    monkeypatch.setattr(runs, "latest_version", latest_version)
    created = api.post("/v1/runs", json={"agent": "quick"})
    thread, outcome = deleting
    thread.join(30)
    (deleted,) = outcome
    if created.status_code == 201:  # the delete waited for the run, then was refused
        assert isinstance(deleted, OrchError) and deleted.http_status == 409, deleted
        assert api.get(f"/v1/runs/{created.json()['id']}").status_code == 200
    else:  # the delete went first: the run is refused, nothing of it is left
        assert created.status_code == 404, created.text
        assert "was deleted just now" in created.json()["message"]
        assert not isinstance(deleted, OrchError), deleted
    with platform.store.session() as s:
        versions = set(s.scalars(select(AgentVersionRow.id)))
        assert all(v in versions for v in s.scalars(select(RunRow.agent_version_id)))


def test_deleting_the_environment_being_made_the_default_loses_one_or_the_other(
    api: httpx.Client, platform: Platform, workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default set between a delete's check and its delete: both answered success, and the
    workspace was left with no default."""
    assert api.post("/v1/environments", json={"name": "racee", "dockerfile": DOCKERFILE}).status_code == 201
    from orch.services import usage

    real_users, real_hold = usage.users, envs.hold
    setting: list[Any] = []
    reached = threading.Event()

    def hold(s: Any, model: Any, row_id: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            reached.set()  # the set-default is at its lock (where it waits, if the delete holds it)
        real_hold(s, model, row_id)

    def users(s: Any, ws_id: str, env: Any) -> list[str]:  # after the delete's default check
        if not setting:
            thread, outcome = _in_thread(lambda: envs.set_default(platform, workspace[0], "racee"))
            _done_or_waiting(platform, thread, reached)
            setting.extend([thread, outcome])
        return list(real_users(s, ws_id, env))

    monkeypatch.setattr(envs, "hold", hold, raising=False)
    monkeypatch.setattr(usage, "users", users)
    deleted = api.delete("/v1/environments/racee")
    thread, outcome = setting
    thread.join(30)
    (set_default,) = outcome
    default = api.get("/v1/workspace/default-environment").json()["default"]
    if deleted.status_code == 200:
        assert isinstance(set_default, OrchError) and set_default.http_status == 404, set_default
        assert default is None
    else:
        assert deleted.status_code == 409 and "workspace default" in deleted.json()["message"]
        assert not isinstance(set_default, OrchError) and default["name"] == "racee"


def test_a_cluster_nodes_api_checks_the_relay_token_before_the_body(app: FastAPI, platform: Platform) -> None:
    """A node answers relayed sandbox calls (server/node_api.py), authenticated by the relay
    token in place of a workspace token: checked before the body too."""
    from orch.server import node_api

    node = node_api.create(platform)
    big = [b'{"environment": "', *[b"a" * MiB] * 8, b'"}']
    status, body, asked = call(node, "POST", "/v1/sandboxes", {"content-type": "application/json"}, big)
    assert (status, body["error"], asked) == (401, "unauthorized", 0)
    assert "cluster node" in body["message"]
