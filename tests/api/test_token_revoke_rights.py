"""Who may revoke which token: a plain token revokes itself and its workspace's other plain
tokens, never an admin token (it may not make one either), which stays; an admin token revokes
any. Found by a tester: a member of a workspace where the operator keeps an admin token (as
docs/workspaces.md advises) could revoke it, signing the operator out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from orch.cli import client as client_mod
from orch.cli.main import app
from tests.api.test_workspaces import as_token, new_workspace

runner = CliRunner()


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    """The CLI talking to the in-process app, with the token given (ORCH_TOKEN)."""

    def make() -> client_mod.Client:
        from orch import config

        cfg = config.load()
        return client_mod.Client(cfg.url, cfg.token, transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("ORCH_URL", "http://testserver")

    def invoke(*args: str, token: str) -> Result:
        monkeypatch.setenv("ORCH_TOKEN", token)
        return runner.invoke(app, list(args))

    return invoke


def test_a_plain_token_may_not_revoke_its_workspaces_admin_token(api: httpx.Client) -> None:
    created = new_workspace(api, "acme")
    member = as_token(api, created["token"])
    operator = api.post("/v1/tokens", json={"name": "ops", "workspace": "acme", "admin": True}).json()
    resp = member.delete(f"/v1/tokens/{operator['id']}")
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert body["error"] == "forbidden"
    assert body["message"] == (
        f"Only an admin token can revoke {operator['id']}, an admin token; this token is a plain "
        "token of workspace acme, so nothing was revoked."
    )
    assert body["fix"] == "Ask someone with an admin token to revoke it."
    assert operator["id"] in {t["id"] for t in member.get("/v1/tokens").json()}  # still there
    assert as_token(api, operator["token"]).get("/v1/workspaces").status_code == 200  # and works
    # Plain tokens of its workspace, its own last, stay its to revoke; an admin revokes any.
    other = member.post("/v1/tokens", json={"name": "ci"}).json()
    assert member.delete(f"/v1/tokens/{other['id']}").status_code == 200
    assert member.delete(f"/v1/tokens/{created['token_id']}").status_code == 200
    assert member.get("/v1/tokens").status_code == 401
    assert api.delete(f"/v1/tokens/{operator['id']}").status_code == 200


def test_another_workspaces_admin_token_is_still_404_for_a_plain_token(api: httpx.Client) -> None:
    """Not 403: a plain token learns nothing of another workspace's tokens."""
    member = as_token(api, new_workspace(api, "acme")["token"])
    theirs = api.post("/v1/tokens", json={"name": "ops", "admin": True}).json()  # team's
    assert member.delete(f"/v1/tokens/{theirs['id']}").status_code == 404
    assert member.delete("/v1/tokens/tok_nothere00").status_code == 404


def test_the_cli_says_it_and_exits_2(api: httpx.Client, cli: Callable[..., Result]) -> None:
    created = new_workspace(api, "acme")
    operator = api.post("/v1/tokens", json={"name": "ops", "workspace": "acme", "admin": True}).json()
    result = cli("token", "revoke", operator["id"], token=created["token"])
    assert result.exit_code == 2, result.output
    assert "Only an admin token can revoke" in result.output
    assert "Ask someone with an admin token to revoke it." in result.output
    assert "Traceback" not in result.output
