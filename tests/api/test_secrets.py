"""Workspace secrets through the API and the CLI, in-process on the fake engine: setting, listing
and deleting them, refusals that change nothing, runs that get them as variables, and output,
records and answers that never hold a value."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import LargeBinary, String, Text, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from orch.cli import client as client_mod
from orch.cli.main import app
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.errors import NotFound
from orch.secret import box
from orch.secret.names import MAX_SECRETS
from orch.services import secrets as workspace_secrets
from orch.services.platform import Platform
from orch.store.schema import Base, RunRow, SecretRow
from tests.api.test_agents_runs import bundle, publish, run

VALUE = "sk-live-q8z3-51Hx"
OTHER = "ghp_7Tz0-other"


def all_text(platform: Platform) -> str:
    """Every text and bytes column of every row of every table (runs' output included), joined."""
    found = []
    with platform.store.session() as s:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text | LargeBinary)]
            for row in s.execute(select(*columns)) if columns else ():
                row = [v for v in row if v is not None]
                found += [
                    v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                    for v in row
                    if v is not None
                ]
    return "\n".join(found)


def test_set_list_replace_delete(api: httpx.Client, platform: Platform) -> None:
    answers = []
    first = api.put("/v1/secrets/OPENAI_API_KEY", json={"value": VALUE})
    assert first.status_code == 200, first.text
    assert set(first.json()) == {"name", "created_at", "updated_at"}
    second = api.put("/v1/secrets/OPENAI_API_KEY", json={"value": OTHER})
    assert second.json()["created_at"] == first.json()["created_at"]
    assert second.json()["updated_at"] > first.json()["updated_at"]
    api.put("/v1/secrets/A_TOKEN", json={"value": VALUE})
    listed = api.get("/v1/secrets")
    assert [s["name"] for s in listed.json()] == ["A_TOKEN", "OPENAI_API_KEY"]
    answers += [first, second, listed]
    gone = api.delete("/v1/secrets/A_TOKEN")
    assert gone.status_code == 204 and gone.content == b""
    again = api.delete("/v1/secrets/A_TOKEN")
    assert again.status_code == 404 and "no secret A_TOKEN" in again.json()["message"]
    assert [s["name"] for s in api.get("/v1/secrets").json()] == ["OPENAI_API_KEY"]
    assert not any(VALUE in a.text or OTHER in a.text for a in answers)
    stored = all_text(platform)
    assert VALUE not in stored and OTHER not in stored and "OPENAI_API_KEY" in stored


@pytest.mark.parametrize(
    ("name", "body", "status", "said"),
    [
        ("openai_key", {"value": "x"}, 400, "is not a secret name"),
        ("1KEY", {"value": "x"}, 400, "is not a secret name"),
        ("K" * 129, {"value": "x"}, 400, "is not a secret name"),
        ("ORCH_TOKEN", {"value": "x"}, 400, "reserves"),
        ("PATH", {"value": "x"}, 400, "orch sets in every sandbox"),
        ("KEY", {"value": ""}, 400, "is empty"),
        ("KEY", {"value": "x" * (64 * 1024 + 1)}, 400, "at most 64 KiB"),
        ("KEY", {"value": "a\x00b"}, 400, "NUL"),
        # A body that is not {"value": TEXT} is malformed: 422, as for every route (docs/secrets.md).
        ("KEY", {}, 422, "value is missing"),
        ("KEY", {"value": 12}, 422, "value must be text"),
        ("KEY", {"value": None}, 422, "value must be text"),
        ("KEY", {"value": "x", "note": "y"}, 422, "note is not a field of this request"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    api: httpx.Client, platform: Platform, name: str, body: dict[str, Any], status: int, said: str
) -> None:
    kept = api.put("/v1/secrets/KEY", json={"value": VALUE}).json()
    resp = api.put(f"/v1/secrets/{name}", json=body)
    assert resp.status_code == status, resp.text
    assert said in resp.json()["message"] and resp.json()["fix"]
    assert api.get("/v1/secrets").json() == [kept]
    with platform.store.session() as s:
        row = s.scalar(select(SecretRow))
        assert row is not None
        assert box.load(platform.config).open(row.workspace_id, "KEY", row.ciphertext) == VALUE


def test_a_workspace_holds_a_bounded_number(api: httpx.Client) -> None:
    for i in range(MAX_SECRETS):
        assert api.put(f"/v1/secrets/K{i}", json={"value": "v"}).status_code == 200
    refused = api.put("/v1/secrets/ONE_MORE", json={"value": "v"})
    assert refused.status_code == 409 and "the most one may hold" in refused.json()["message"]
    assert api.put("/v1/secrets/K0", json={"value": "new"}).status_code == 200  # replacing is fine
    assert len(api.get("/v1/secrets").json()) == MAX_SECRETS


def test_the_bound_holds_for_sets_at_the_same_moment(
    api: httpx.Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New secrets set together on a workspace one short of its bound: one is stored, the others
    refused (before: each counted the workspace's secrets before any was stored, and all were)."""
    for i in range(MAX_SECRETS - 1):
        assert api.put(f"/v1/secrets/K{i}", json={"value": "v"}).status_code == 200
    sets, counted, lock, all_counted = 6, [0], threading.Lock(), threading.Event()
    check_room = workspace_secrets._check_room

    def slow_check_room(s: Any, ws_id: str) -> None:
        check_room(s, ws_id)
        # Between the count and the insert, until every set has counted too (or a second has
        # passed: they wait for this one, if the count and the insert are one step).
        with lock:
            counted[0] += 1
            if counted[0] == sets:
                all_counted.set()
        all_counted.wait(1)

    monkeypatch.setattr(workspace_secrets, "_check_room", slow_check_room)
    go, answers = threading.Barrier(sets), []

    def put(i: int) -> None:
        go.wait()
        answers.append(api.put(f"/v1/secrets/NEW{i}", json={"value": "v"}))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(sets)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert sorted(a.status_code for a in answers) == [200] + [409] * (sets - 1), [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["message"] == f"This workspace holds {MAX_SECRETS} secrets, the most one may hold."
    assert len(api.get("/v1/secrets").json()) == MAX_SECRETS


@pytest.fixture
def agent(api: httpx.Client, tmp_path: Path) -> str:
    files = {"main.py": "", "orch.yaml": "secrets: [OPENAI_API_KEY, GH_TOKEN]\nenv:\n  MODE: test\n"}
    assert publish(api, "keyed", bundle(tmp_path, files)).status_code == 201
    return "keyed"


def test_of_two_deletes_at_once_one_deletes_and_the_other_finds_nothing(
    api: httpx.Client, platform: Platform, workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: both (or three) callers were told 204, and the server logged a
    SQLAlchemy warning: each read the row, then deleted it."""
    assert api.put("/v1/secrets/API_KEY", json={"value": "v"}).status_code in (200, 201)
    answers: list[int] = []

    def the_other() -> None:  # the other delete, run to its end just before this one writes
        if not answers:
            answers.append(0)
            try:
                workspace_secrets.delete_secret(platform, workspace[0], "API_KEY")
                answers.append(204)
            except NotFound:
                answers.append(404)

    real_delete, real_execute = Session.delete, Connection.execute

    def delete(self: Session, row: object) -> None:  # as it was: read, then delete the row read
        if isinstance(row, SecretRow):
            the_other()
        real_delete(self, row)

    def execute(self: Connection, statement: Any, *args: Any, **kwargs: Any) -> Any:  # one statement
        if getattr(statement, "is_delete", False) and getattr(statement.table, "name", "") == "secrets":
            the_other()
        return real_execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(Session, "delete", delete)
    monkeypatch.setattr(Connection, "execute", execute)
    answers.append(api.delete("/v1/secrets/API_KEY").status_code)
    assert sorted(a for a in answers if a) == [204, 404], answers
    assert api.get("/v1/secrets").json() == []


def test_a_run_gets_its_secrets_and_its_output_is_masked(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, agent: str
) -> None:
    api.put("/v1/secrets/OPENAI_API_KEY", json={"value": VALUE})
    api.put("/v1/secrets/GH_TOKEN", json={"value": OTHER})
    api.put("/v1/secrets/UNASKED", json={"value": "never-given-9"})

    def behave(spec: ContainerSpec, out: Any, err: Any) -> ContainerExit:
        if spec.name.endswith("-deps"):
            return ContainerExit(0)
        key = spec.env["OPENAI_API_KEY"].encode()
        out(b"key=" + key + b"\n")
        out(b"split: " + key[:5])  # one value across two writes
        out(key[5:] + b" and " + spec.env["GH_TOKEN"].encode() + b"\n")
        err(b"warning " + key[:-1])  # the start of the value only, at the very end
        return ContainerExit(0)

    fake_engine.behaviour = behave
    r = run(api, platform, agent, env={"OPENAI_API_KEY": "from-env", "EXTRA": "1"})
    assert r["status"] == "succeeded", r
    spec = fake_engine.containers[-1]
    assert spec.env["OPENAI_API_KEY"] == VALUE and spec.env["GH_TOKEN"] == OTHER  # over --env
    assert spec.env["MODE"] == "test" and spec.env["EXTRA"] == "1" and "UNASKED" not in spec.env
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert logs["stdout"] == "key=***\nsplit: *** and ***\n"
    assert logs["stderr"] == "warning " + VALUE[:-1]  # held back, then stored at the end
    shown = json.dumps([r, logs, api.get("/v1/runs").json()])
    assert VALUE not in shown and OTHER not in shown
    with platform.store.session() as s:
        row = s.get(RunRow, r["id"])
        assert row is not None and json.loads(row.env) == {"OPENAI_API_KEY": "from-env", "EXTRA": "1"}
    stored = all_text(platform)  # the run's output among it
    assert "key=***" in stored and VALUE not in stored and OTHER not in stored


def test_a_missing_secret_fails_the_run_before_it_starts(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, agent: str
) -> None:
    api.put("/v1/secrets/GH_TOKEN", json={"value": OTHER})
    r = run(api, platform, agent)
    assert r["status"] == "failed"
    assert r["reason"] == "This agent needs the secret OPENAI_API_KEY, which workspace team does not have."
    log = api.get(f"/v1/runs/{r['id']}/logs").json()["log"]
    assert "orch secret set OPENAI_API_KEY" in log and "Traceback" not in log
    assert fake_engine.containers == []
    api.delete("/v1/secrets/GH_TOKEN")
    r = run(api, platform, agent)
    assert "the secrets OPENAI_API_KEY and GH_TOKEN, which" in r["reason"]


def test_secrets_under_another_key_fail_runs_with_a_sentence(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    agent: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.put("/v1/secrets/OPENAI_API_KEY", json={"value": VALUE})
    api.put("/v1/secrets/GH_TOKEN", json={"value": OTHER})
    platform.config = platform.config.with_values(secret_key=box.new_key_text())
    with caplog.at_level(logging.WARNING):
        workspace_secrets.prepare(platform)  # as at the next start
    assert "2 of 2 stored secrets cannot be decrypted" in caplog.text and VALUE not in caplog.text
    r = run(api, platform, agent)
    assert r["status"] == "failed" and fake_engine.containers == []
    assert "OPENAI_API_KEY and GH_TOKEN cannot be decrypted with this server's secret key" in r["reason"]
    log = api.get(f"/v1/runs/{r['id']}/logs").json()["log"]
    assert "set them again with `orch secret set OPENAI_API_KEY`" in log and "Traceback" not in log
    platform.config = platform.config.with_values(secret_key="not a key")
    r = run(api, platform, agent)
    assert r["reason"].startswith("This agent's secrets cannot be decrypted: the secret_key setting")


# ---- the CLI ------------------------------------------------------------------------------------

runner = CliRunner()
Invoke = Callable[..., Result]


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]) -> Invoke:
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str, input: str | bytes | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    return invoke


def test_cli_set_list_delete(cli: Invoke, api: httpx.Client) -> None:
    res = cli("secret", "set", "OPENAI_API_KEY", input=VALUE + "\n")
    assert res.exit_code == 0, res.output
    assert "Created secret OPENAI_API_KEY" in res.output and VALUE not in res.output
    res = cli("secret", "set", "OPENAI_API_KEY", "--value", OTHER)
    assert res.exit_code == 0 and "Updated secret OPENAI_API_KEY" in res.output
    cli("secret", "set", "GH_TOKEN", input="line one\r\nline two\r\n")
    listed = json.loads(cli("secret", "list", "--json").output)
    assert [s["name"] for s in listed] == ["GH_TOKEN", "OPENAI_API_KEY"]
    assert all(set(s) == {"name", "created_at", "updated_at"} for s in listed)
    table = cli("secret", "list").output
    assert "NAME" in table and "OPENAI_API_KEY" in table and OTHER not in table
    res = cli("secret", "delete", "GH_TOKEN")
    assert res.exit_code == 0 and "Deleted secret GH_TOKEN." in res.output
    res = cli("secret", "delete", "GH_TOKEN")
    assert res.exit_code == 2 and "no secret GH_TOKEN" in res.output
    cli("secret", "delete", "OPENAI_API_KEY")
    assert "No secrets in this workspace" in cli("secret", "list").output


def test_cli_takes_the_value_as_given_less_one_line_ending(cli: Invoke, platform: Platform) -> None:
    cli("secret", "set", "PEM", input="-----BEGIN-----\nabc\n-----END-----\n\n")
    with platform.store.session() as s:
        row = s.scalar(select(SecretRow).where(SecretRow.name == "PEM"))
        assert row is not None
        value = box.load(platform.config).open(row.workspace_id, "PEM", row.ciphertext)
    assert value == "-----BEGIN-----\nabc\n-----END-----\n"


def test_cli_refusals_exit_2_and_change_nothing(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        (("secret", "set", "lower"), VALUE, "is not a secret name"),
        (("secret", "set", "KEY"), "", "standard input held nothing"),
        (("secret", "set", "KEY"), "\n", "standard input held only a line ending, which is not part"),
        (("secret", "set", "KEY"), "\r\n", "standard input held only a line ending"),
        (("secret", "set", "KEY", "--value", ""), None, "--value is"),
        (("secret", "set", "KEY", "--value", "a\x00b"), None, "NUL"),
        (("secret", "set", "KEY"), b"\xff\xfe", "not UTF-8 text"),
        (("secret", "set", "KEY"), "x" * (64 * 1024 + 5), "larger than 64 KiB"),
        (("secret", "delete", "ORCH_X"), None, "reserves"),
    ]
    for args, stdin, said in cases:
        res = cli(*args, input=stdin)
        assert res.exit_code == 2 and said in res.output, (args, res.output)
        assert "Traceback" not in res.output
    monkeypatch.setattr("orch.cli.secret._interactive", lambda: True)
    res = cli("secret", "set", "KEY")
    assert res.exit_code == 2 and "standard input is a terminal" in res.output
    assert "--value" in res.output
    assert json.loads(cli("secret", "list", "--json").output) == []


def test_a_lost_key_file_refuses_new_values_with_a_sentence(api: httpx.Client, platform: Platform) -> None:
    (platform.config.home / box.KEY_FILE).unlink()
    resp = api.put("/v1/secrets/KEY", json={"value": VALUE})
    assert resp.status_code == 500 and "secret.key is missing" in resp.json()["message"]
    assert "Restart `orch server`" in resp.json()["fix"] and VALUE not in resp.text
    assert api.get("/v1/secrets").json() == []
