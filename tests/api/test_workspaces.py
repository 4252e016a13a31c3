"""Workspaces and tokens through the API and the CLI: admin rights, hashing, revocation."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from orch.cli import client as client_mod
from orch.cli.main import app
from orch.errors import Conflict
from orch.services import workspaces
from orch.services.platform import Platform
from orch.services.views import TokenView
from orch.store.schema import TokenRow, WorkspaceRow

runner = CliRunner()


def as_token(api: httpx.Client, token: str) -> httpx.Client:
    return httpx.Client(
        transport=api._transport, base_url="http://testserver", headers={"Authorization": f"Bearer {token}"}
    )


def new_workspace(api: httpx.Client, name: str) -> dict:
    resp = api.post("/v1/workspaces", json={"name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_admin_creates_workspaces_whose_first_token_is_a_plain_one(api: httpx.Client) -> None:
    created = new_workspace(api, "acme")
    assert created["name"] == "acme" and created["id"].startswith("ws_")
    assert created["token"].startswith("orch_") and created["token_id"].startswith("tok_")
    acme = as_token(api, created["token"])
    assert [w["name"] for w in acme.get("/v1/workspaces").json()] == ["acme"]
    assert {w["name"] for w in api.get("/v1/workspaces").json()} == {"team", "acme"}
    # acme's own token may not make workspaces: 403, with a plain sentence and a fix.
    resp = acme.post("/v1/workspaces", json={"name": "other"})
    assert resp.status_code == 403
    assert resp.json()["error"] == "forbidden" and "Only an admin token" in resp.json()["message"]
    assert resp.json()["fix"]
    assert api.post("/v1/workspaces", json={"name": "acme"}).status_code == 409
    resp = api.post("/v1/workspaces", json={"name": "Bad Name"})
    assert resp.status_code == 400 and "Workspace name 'Bad Name' is not valid" in resp.json()["message"]


def test_tokens_are_shown_once_and_stored_hashed(api: httpx.Client, platform: Platform) -> None:
    resp = api.post("/v1/tokens", json={"name": "ci"})
    assert resp.status_code == 201, resp.text
    new = resp.json()
    assert {"token", "id", "workspace", "name", "created_at", "admin"} <= set(new)
    assert (new["workspace"], new["name"], new["admin"]) == ("team", "ci", False)
    listed = api.get("/v1/tokens").json()
    assert {t["name"] for t in listed} == {"admin", "ci"}
    assert all("token" not in t and "sha256" not in t for t in listed)
    assert new["token"] not in api.get("/v1/tokens").text
    with platform.store.session() as s:
        row = s.get(TokenRow, new["id"])
        assert row is not None and row.sha256 == hashlib.sha256(new["token"].encode()).hexdigest()
        texts = [str(v) for r in s.scalars(select(TokenRow)) for v in vars(r).values()]
    assert not any(new["token"] in t for t in texts)


def test_revocation_takes_effect_at_once(api: httpx.Client) -> None:
    new = api.post("/v1/tokens", json={"name": "short-lived"}).json()
    client = as_token(api, new["token"])
    assert client.get("/v1/environments").status_code == 200
    resp = api.delete(f"/v1/tokens/{new['id']}")
    assert resp.status_code == 200 and resp.json()["id"] == new["id"]
    assert client.get("/v1/environments").status_code == 401
    assert api.delete(f"/v1/tokens/{new['id']}").status_code == 404


def test_plain_tokens_manage_their_own_workspace_only(api: httpx.Client) -> None:
    acme = as_token(api, new_workspace(api, "acme")["token"])
    own = acme.post("/v1/tokens", json={"name": "ci", "workspace": "acme"})
    assert own.status_code == 201 and own.json()["workspace"] == "acme"
    # Another workspace, existing or not, is refused alike: a plain token learns nothing.
    for other in ("team", "nowhere"):
        resp = acme.post("/v1/tokens", json={"name": "x", "workspace": other})
        assert resp.status_code == 403 and "Only an admin token" in resp.json()["message"]
        assert acme.get("/v1/tokens", params={"workspace": other}).status_code == 403
    assert acme.post("/v1/tokens", json={"name": "x", "admin": True}).status_code == 403
    assert {t["workspace"] for t in acme.get("/v1/tokens").json()} == {"acme"}
    team_tokens = api.get("/v1/tokens", params={"workspace": "team"}).json()
    assert acme.delete(f"/v1/tokens/{team_tokens[0]['id']}").status_code == 404
    # The admin sees and manages every workspace's tokens.
    assert {t["workspace"] for t in api.get("/v1/tokens").json()} == {"team", "acme"}
    made = api.post("/v1/tokens", json={"name": "ops", "workspace": "acme"}).json()
    assert made["workspace"] == "acme" and as_token(api, made["token"]).get("/v1/agents").status_code == 200
    assert api.delete(f"/v1/tokens/{own.json()['id']}").status_code == 200
    assert api.post("/v1/tokens", json={"name": "x", "workspace": "nowhere"}).status_code == 404


def test_the_last_admin_token_cannot_be_revoked(api: httpx.Client) -> None:
    mine = next(t for t in api.get("/v1/tokens").json() if t["admin"])
    resp = api.delete(f"/v1/tokens/{mine['id']}")
    assert resp.status_code == 409 and "last admin token" in resp.json()["message"]
    second = api.post("/v1/tokens", json={"name": "admin2", "admin": True}).json()
    assert second["admin"] is True
    assert api.delete(f"/v1/tokens/{mine['id']}").status_code == 200
    assert api.get("/v1/tokens").status_code == 401
    assert as_token(api, second["token"]).get("/v1/workspaces").status_code == 200


def _paused_in_transaction(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The first revoke to reach its answer waits there, its delete made and not committed, until
    `go`; `there` says it is waiting."""
    there, go = threading.Event(), threading.Event()
    view = workspaces._token_view

    def paused(row: TokenRow, ws: object) -> object:
        if not there.is_set():
            there.set()
            assert go.wait(10)
        return view(row, ws)  # type: ignore[arg-type]

    monkeypatch.setattr(workspaces, "_token_view", paused)
    return there, go


def _admin_callers(platform: Platform, api: httpx.Client) -> tuple[workspaces.Caller, workspaces.Caller]:
    """The two admin tokens of the platform, each as the caller revoking the other."""
    api.post("/v1/tokens", json={"name": "admin2", "admin": True}).raise_for_status()
    with platform.store.session() as s:
        rows = s.scalars(select(TokenRow).where(TokenRow.admin.is_(True))).all()
        assert len(rows) == 2
        ws = s.get(WorkspaceRow, rows[0].workspace_id)
        assert ws is not None
        return workspaces.Caller(ws, rows[0].id, True), workspaces.Caller(ws, rows[1].id, True)


def test_two_admin_tokens_revoking_each_other_at_once_leave_one(
    api: httpx.Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: the last two admin tokens revoked each other at the same moment, both
    got 200, and no one could manage workspaces any more."""
    a, b = _admin_callers(platform, api)
    there, go = _paused_in_transaction(monkeypatch)
    answers: dict[str, object] = {}

    def revoke(caller: workspaces.Caller, token_id: str) -> None:
        try:
            answers[token_id] = workspaces.revoke_token(platform, caller, token_id)
        except Conflict as e:
            answers[token_id] = e

    first = threading.Thread(target=revoke, args=(a, b.token_id))
    first.start()
    assert there.wait(10)
    second = threading.Thread(target=revoke, args=(b, a.token_id))
    second.start()
    second.join(0.5)
    assert second.is_alive(), "the second revoke did not wait for the first"
    go.set()
    first.join(10)
    second.join(10)
    assert isinstance(answers[b.token_id], TokenView)
    refused = answers[a.token_id]
    assert isinstance(refused, Conflict) and "is the last admin token" in refused.message
    with platform.store.session() as s:
        assert s.scalars(select(TokenRow.id).where(TokenRow.admin.is_(True))).all() == [a.token_id]


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The CLI with its real settings (ORCH_HOME, ORCH_URL, ORCH_TOKEN), talking to the in-process app."""

    def make() -> client_mod.Client:
        from orch import config

        cfg = config.load()
        return client_mod.Client(cfg.url, cfg.token, transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("ORCH_URL", "http://testserver")
    monkeypatch.setenv("ORCH_TOKEN", api.headers["Authorization"].removeprefix("Bearer "))

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def test_cli_workspace_and_token_commands(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    res = cli("workspace", "create", "acme", "--json")
    assert res.exit_code == 0, res.output
    created = json.loads(res.stdout)
    assert {"id", "name", "created_at", "token", "token_id"} <= set(created)
    res = cli("token", "create", "--workspace", "acme", "--name", "ci", "--json")
    assert res.exit_code == 0, res.output
    token = json.loads(res.stdout)
    assert {"token", "id", "workspace", "name", "created_at", "admin"} <= set(token)
    assert (token["workspace"], token["name"], token["admin"]) == ("acme", "ci", False)
    names = [w["name"] for w in json.loads(cli("workspace", "list", "--json").stdout)]
    assert names == ["team", "acme"]
    assert "acme" in cli("workspace", "list").output
    listed = json.loads(cli("token", "list", "--json").stdout)
    assert token["id"] in [t["id"] for t in listed] and token["token"] not in cli("token", "list").output
    res = cli("token", "create")
    assert res.exit_code == 0 and res.stdout.startswith("orch_") and "Shown this once" in res.stderr
    res = cli("workspace", "create", "acme")
    assert res.exit_code == 2 and "exists already" in res.output

    # A CLI given ORCH_TOKEN acts as that token's workspace, whatever its config file says.
    admin_token = json.loads(cli("token", "create", "--admin", "--json").stdout)["token"]
    monkeypatch.setenv("ORCH_TOKEN", token["token"])
    assert [w["name"] for w in json.loads(cli("workspace", "list", "--json").stdout)] == ["acme"]
    assert {t["workspace"] for t in json.loads(cli("token", "list", "--json").stdout)} == {"acme"}
    res = cli("workspace", "create", "other")
    assert res.exit_code == 2 and "Only an admin token" in res.output and "Traceback" not in res.output
    monkeypatch.setenv("ORCH_TOKEN", admin_token)
    res = cli("token", "revoke", token["id"])
    assert res.exit_code == 0 and f"Revoked ci ({token['id']}) of workspace acme" in res.output
    monkeypatch.setenv("ORCH_TOKEN", token["token"])
    res = cli("workspace", "list")
    assert res.exit_code == 2 and "not valid" in res.output


def test_the_first_start_gives_the_local_cli_an_admin_token(platform: Platform) -> None:
    from orch.services import workspaces

    first = workspaces.bootstrap(platform, "")
    assert first is not None and workspaces.bootstrap(platform, first) is None
    stand_in = workspaces.bootstrap(platform, "orch_revoked")  # the CLI's token no longer works
    assert stand_in is not None
    with platform.store.session() as s:
        assert workspaces.identify(s, first).admin and workspaces.identify(s, stand_in).admin


def test_a_name_of_any_length_gets_the_name_rule(api: httpx.Client, cli) -> None:
    """A name past the request's 1000-character bound is refused with the same sentence and fix
    as any other bad name (the 1-63 rule), not with the bound's."""
    for length in (64, 1001, 5000):
        resp = api.post("/v1/workspaces", json={"name": "a" * length})
        assert resp.status_code == 400, (length, resp.text)
        assert "Workspace name 'aaaa" in resp.json()["message"] and "Use 1-63" in resp.json()["fix"]
    resp = api.post("/v1/tokens", json={"name": "t" * 5000})
    assert resp.status_code == 400 and "Token name" in resp.json()["message"]
    assert "Use 1-63" in resp.json()["fix"]
    resp = api.post("/v1/environments", json={"name": "e" * 5000, "dockerfile": "FROM python\n"})
    assert resp.status_code == 400 and "Use 1-63" in resp.json()["fix"]
    res = cli("workspace", "create", "a" * 5000)
    assert res.exit_code == 2 and "(5000 characters)" in res.output and "Use 1-63" in res.output
    assert "longer than 1000" not in res.output
    assert [w["name"] for w in api.get("/v1/workspaces").json()] == ["team"]


def test_an_empty_name_or_id_is_refused_before_any_request(cli) -> None:
    for args in (
        ("token", "revoke", ""),
        ("agents", "show", ""),
        ("runs", "show", ""),
        ("env", "status", ""),
        # --workspace '' was taken as the token's own workspace: a token made, or listed, there.
        ("token", "create", "--workspace", ""),
        ("token", "list", "--workspace", ""),
    ):
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert "An empty name or id was given" in res.output and "Traceback" not in res.output
        assert "307" not in res.output
    # It was sent, and answered as a request with no Authorization header.
    res = cli("login", "--url", "http://testserver", "--token", " ")
    assert res.exit_code == 2 and res.stderr.startswith("✗ --token is empty."), res.output


def test_an_empty_workspace_in_a_token_call_is_refused(api: httpx.Client) -> None:
    """`"workspace": ""` names no workspace: it was taken as the caller's own (a token made in the
    admin's workspace for an admin who meant another one)."""
    before = api.get("/v1/tokens").json()
    resp = api.post("/v1/tokens", json={"name": "x", "workspace": ""})
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"] == "The workspace given is empty, which names no workspace."
    assert "leave workspace out for your token's own" in resp.json()["fix"]
    resp = api.get("/v1/tokens", params={"workspace": ""})
    assert resp.status_code == 400 and "is empty" in resp.json()["message"], resp.text
    assert api.get("/v1/tokens").json() == before


@pytest.mark.parametrize(
    ("token", "said"),
    [
        (
            "orch_\udce9",
            "a character that is not printable ASCII (character 6)",
        ),  # an undecodable byte, as the shell passes it
        ("orch_é", "a character that is not printable ASCII"),
        ("abc\ndef", "a space or line ending (character 4)"),
        ("orch_abc ", "a space or line ending"),
    ],
)
def test_a_token_of_another_form_is_refused_before_any_request(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, token: str, said: str
) -> None:
    monkeypatch.setenv("ORCH_TOKEN", token)
    res = cli("env", "list")
    assert res.exit_code == 2, res.output
    assert f"The API token is not valid: it holds {said}" in res.output and "orch token create" in res.output
    assert "unexpectedly" not in res.output and "400" not in res.output
    res = cli("login", "--url", "http://testserver", "--token", token)  # given to `orch login`
    assert res.exit_code == 2 and "The API token is not valid" in res.output


def test_a_token_of_another_form_in_config_toml_is_refused(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ORCH_TOKEN")
    home = tmp_path / "cli-home"
    home.mkdir()
    for written in ("orch_\\u00e9", "abc\\ndef"):  # TOML's escapes: é, a line ending
        (home / "config.toml").write_text(f'url = "http://testserver"\ntoken = "{written}"\n')
        res = cli("env", "list")
        assert res.exit_code == 2 and "The API token is not valid" in res.output, res.output


def test_a_refused_token_from_orch_token_says_it_wins_over_config_toml(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`orch login` saved a good token while ORCH_TOKEN held a revoked one: login said "Logged in"
    and the next command sent its user to config.toml (found by a tester)."""
    real = client_mod.Client.from_settings
    monkeypatch.setattr(
        client_mod.Client, "from_settings", staticmethod(lambda: real(transport=api._transport))
    )
    monkeypatch.setattr(  # login's own request, to the URL and token it was given
        "orch.cli.server.Transport", lambda url, token: client_mod.Client(url, token, api._transport)
    )
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("ORCH_URL", "http://testserver")
    monkeypatch.setenv("ORCH_TOKEN", "orch_" + "x" * 40)
    good = api.headers["Authorization"].removeprefix("Bearer ")
    res = runner.invoke(app, ["login", "--url", "http://testserver", "--token", good])
    assert res.exit_code == 0, res.output
    assert "ORCH_TOKEN is set in this shell and wins over" in res.output and "unset ORCH_TOKEN" in res.output
    assert "ORCH_URL is set" not in res.output  # the same address
    res = runner.invoke(app, ["env", "list"])
    assert res.exit_code == 2 and "The API token is not valid." in res.output
    assert "This token comes from ORCH_TOKEN, which wins over $ORCH_HOME/config.toml" in res.output
    monkeypatch.delenv("ORCH_TOKEN")  # the saved one, which works
    assert runner.invoke(app, ["env", "list"]).exit_code == 0
    # An empty variable is unset, and an address is the same with its last slash.
    monkeypatch.setenv("ORCH_TOKEN", "")
    monkeypatch.setenv("ORCH_URL", "http://testserver/")
    res = runner.invoke(app, ["login", "--url", "http://testserver", "--token", good])
    assert res.exit_code == 0 and "is set in this shell" not in res.output, res.output
