"""A store that does not answer (docs/architecture.md "A store that does not answer"): the API,
the CLI and the services' origin answer 503 `store_unavailable` naming the store's kind (the log
line names its URL, never with its password) and the fix, with one warning line in the log a
request, not a bug's 500 and its traceback (errors.store_unavailable, server/app.py,
server/proxy.py). Found by a tester, whose PostgreSQL server stopped: every call answered
`500 internal ... OperationalError`."""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from orch.cli import client as client_mod
from orch.cli.main import app as cli_app
from orch.services.platform import Platform
from orch.store import Store

FIX = "Try again once it answers"


@pytest.fixture
def silent(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """The store stops answering, as its driver says it: its pooled connections are gone and a
    new one is refused (PostgreSQL's server stopped; SQLite's file out of reach). SQLAlchemy
    wraps the driver's error as it does a real one's."""
    if platform.store.db.dialect.name == "postgresql":
        said: Exception = psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
        )
    else:
        said = sqlite3.OperationalError("unable to open database file")

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise said

    platform.store.db.dispose()
    monkeypatch.setattr(platform.store.db.dialect, "connect", refuse)
    return platform


def says_it_does_not_answer(answer: httpx.Response, platform: Platform) -> None:
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["error"] == "store_unavailable", body
    what = "SQLite file" if platform.store.db.dialect.name == "sqlite" else "PostgreSQL database"
    assert body["message"] == (
        f"The server's store (its {what}) does not answer: the server can neither read nor record "
        "anything until it does."
    ), body
    assert platform.store.shown not in answer.text  # the operator's business, in the log only
    assert body["fix"].startswith(FIX), body
    assert answer.headers["retry-after"] == "5"


def test_the_api_answers_503_store_unavailable_while_the_store_does_not_answer(
    api: httpx.Client, silent: Platform, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = [
        ("GET", "/v1/runs", None),
        ("GET", "/v1/agents", None),
        ("POST", "/v1/runs", {"agent": "printer"}),
        ("GET", "/v1/runs/run_0123456789abcdef/logs", None),
    ]
    with caplog.at_level(logging.WARNING):
        for method, path, body in calls:
            says_it_does_not_answer(api.request(method, path, json=body), silent)
    said = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(said) == len(calls), caplog.messages  # one line a request ...
    assert all(r.exc_info is None for r in caplog.records), caplog.messages  # ... no traceback
    # Once it answers again, so does the API.
    monkeypatch.undo()
    assert api.get("/v1/runs").status_code == 200


def test_the_cli_says_it_and_exits_1(
    api: httpx.Client, silent: Platform, workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    res = CliRunner().invoke(cli_app, ["runs", "list"])
    assert res.exit_code == 1, res.output
    assert "does not answer" in res.output and FIX in res.output, res.output
    assert "bug worth reporting" not in res.output, res.output


def test_the_services_origin_answers_503_store_unavailable(
    site: httpx.Client, silent: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """A service's route (and a private one's token) is asked of the store: the proxy answers
    as it answers its other errors (JSON), not a plain-text 500."""
    with caplog.at_level(logging.WARNING):
        says_it_does_not_answer(site.get("/services/team/web/"), silent)
        says_it_does_not_answer(site.post("/services/team/api/items", json={}), silent)
    assert all(r.exc_info is None for r in caplog.records), caplog.messages
    assert len([m for m in caplog.messages if "does not answer" in m]) == 2, caplog.messages


def test_a_websocket_to_a_service_is_refused_503_store_unavailable(
    workspace: tuple[str, str], live: str, silent: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    """Its route asked of a store that does not answer: the handshake is answered as an HTTP
    request's is (it was the server's traceback, and a bare refusal)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = live.replace("http://", "ws://") + "/services/team/web/socket"
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidStatus) as refused:
        connect(
            url, proxy=None, additional_headers={"Authorization": f"Bearer {workspace[1]}"}, open_timeout=10
        )
    answer = refused.value.response
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer
    assert json.loads(answer.body)["error"] == "store_unavailable", answer.body
    assert all(r.exc_info is None for r in caplog.records), caplog.messages
    assert len([m for m in caplog.messages if "does not answer" in m]) == 1, caplog.messages


def test_the_store_is_named_without_its_password() -> None:
    store = Store("postgresql://orch:s3cret-pw@127.0.0.1:1/orch")  # nothing is connected to
    try:
        assert store.shown == "postgresql://orch:***@127.0.0.1:1/orch"  # as written, not the engine's
        down = store.trouble(
            psycopg.OperationalError("connection failed: connection to server at ... Connection refused")
        )
        assert down is not None and (down.code, down.http_status) == ("store_unavailable", 503)
        assert "s3cret-pw" not in str(down.to_dict())
        assert store.shown not in down.message and "PostgreSQL database" in down.message
    finally:
        store.dispose()


@pytest.mark.parametrize(
    "other",
    [
        sqlite3.OperationalError("no such table: runs"),  # a bug's, as before
        sqlite3.IntegrityError("UNIQUE constraint failed: runs.id"),
        psycopg.errors.UndefinedTable("relation runs does not exist"),
    ],
    ids=["sqlite-no-such-table", "integrity", "pg-undefined-table"],
)
def test_other_store_errors_are_not_said_to_be_the_store_not_answering(other: Exception) -> None:
    store = Store("sqlite:///:memory:")
    try:
        assert store.trouble(other) is None
    finally:
        store.dispose()
