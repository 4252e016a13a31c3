"""Sandboxes on demand on a store that refuses (docs/architecture.md "A full store"): a command
and a file call go on when the store refuses their "last used" bump, and a store's trouble met
inside a command's or a file call's own thread is answered 503 as every other route answers it,
never as a bug's 500 (docs/sandboxes.md)."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import httpx
import pytest

from orch.sandbox.held_fake import FakeHolder
from orch.services.platform import Platform
from orch.store.schema import SandboxRow
from tests.api.test_sandboxes import NDJSON, create, holder
from tests.refusing_store import FULL, LOCKED, refuse

__all__ = ["holder"]


def _last_used(platform: Platform, sandbox_id: str) -> datetime:
    with platform.store.session() as s:
        row = s.get(SandboxRow, sandbox_id)
        assert row is not None
        return row.last_used_at


def _touch(statement: str) -> bool:
    return statement.lstrip().upper().startswith("UPDATE SANDBOXES SET LAST_USED_AT")


@pytest.mark.parametrize("said", [FULL, LOCKED])
def test_a_refused_last_use_fails_no_command_and_no_file_call(
    api: httpx.Client,
    holder: FakeHolder,
    platform: Platform,
    caplog: pytest.LogCaptureFixture,
    said: str,
) -> None:
    """Found by a tester: on a full disk `echo hi` ran, then its answer was 500 "The call failed
    in the server: OperationalError" (a bug worth reporting) and a traceback, as were a file's
    write and even its read: the failed write was the bookkeeping of its last use."""
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}"
    before = _last_used(platform, sb["id"])
    refused = refuse(platform, 1000, _touch, said)
    with caplog.at_level(logging.INFO, logger="orch"):
        collected = api.post(f"{url}/exec", json={"command": ["echo", "hi"]})
        assert collected.status_code == 200, collected.text
        assert (collected.json()["exit_code"], collected.json()["stdout"]) == (0, "hi\n")
        streamed = api.post(f"{url}/exec", json={"command": ["echo", "there"]}, headers=NDJSON)
        lines = [json.loads(x) for x in streamed.text.splitlines()]
        assert lines[0] == {"stream": "stdout", "data": "there\n"} and lines[-1]["exit_code"] == 0
        written = api.put(f"{url}/files", params={"path": "a.txt"}, content=b"abc")
        assert written.status_code == 200, written.text
        read = api.get(f"{url}/files", params={"path": "a.txt"})
        assert (read.status_code, read.content) == (200, b"abc")
    assert len(refused) == 8  # each call's two bumps, all refused
    # The idle timeout counts from the last use the store took: here, the create.
    assert _last_used(platform, sb["id"]) == before
    assert api.get(url).json()["status"] == "running"
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING, [r.getMessage() for r in warned]
    assert "recording a sandbox's last use failed: the store refused" in warned[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    # The store answers again: said once, and the next use is recorded.
    refused.extend(["done"] * 1000)  # the listener refuses no more
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="orch"):
        assert api.post(f"{url}/exec", json={"command": ["true"]}).status_code == 200
    assert _last_used(platform, sb["id"]) > before
    assert [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()] != []


@pytest.mark.parametrize(
    ("said", "code"),
    [(FULL, "store_full"), (LOCKED, "store_busy"), ("unable to open database file", "store_unavailable")],
)
def test_a_store_s_trouble_in_a_file_call_s_thread_is_a_503(
    api: httpx.Client,
    holder: FakeHolder,
    platform: Platform,
    caplog: pytest.LogCaptureFixture,
    said: str,
    code: str,
) -> None:
    """The work of a file call (and of a command) runs on a thread of its own, whose unexpected
    errors were all said as a bug ("The call failed in the server: OperationalError.", 500, a
    traceback): a store's trouble there is answered as the app's handlers answer it."""
    sb = create(api)
    refuse(platform, 1, lambda st: st.lstrip().upper().startswith("SELECT SANDBOXES."), said)
    with caplog.at_level(logging.WARNING, logger="orch"):
        resp = api.get(f"/v1/sandboxes/{sb['id']}/files", params={"path": "a.txt"})
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == code and "bug" not in resp.json()["fix"]
    if code == "store_busy":
        assert resp.headers["Retry-After"] == "1"
    if code == "store_unavailable":  # named as the API names it: this store's kind
        what = "SQLite file" if platform.store.db.dialect.name == "sqlite" else "PostgreSQL database"
        assert f"(its {what}) does not answer" in resp.json()["message"], resp.json()
    assert not any(r.exc_info for r in caplog.records)
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["orch.server.api.sandboxes"]
    assert api.get(f"/v1/sandboxes/{sb['id']}").json()["status"] == "running"
