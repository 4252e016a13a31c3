"""`orch publish` and `orch service deploy` wait for the server's answer as long as it takes: a
large bundle's upload and fit check outlasted the CLI's usual limit (30 s), which then said the
server "did not answer in time" though the version was published (found by a tester)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orch.cli import client as client_mod
from orch.cli.main import app
from orch.services import agents, deployed
from orch.services.platform import Platform

LIMIT = 0.5  # the CLI's usual limit in this test; the server takes four times as long


@pytest.fixture
def slow_cli(served: tuple[str, str], workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    api_url, _ = served
    made: list[client_mod.Client] = []

    def make() -> client_mod.Client:
        made.append(client_mod.Client(api_url, workspace[1], timeout=LIMIT))
        return made[-1]

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    for module, name in ((agents, "publish"), (deployed, "deploy")):
        original = getattr(module, name)

        def slowly(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            time.sleep(4 * LIMIT)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, slowly)

    def invoke(*args: str) -> Any:
        try:
            return CliRunner().invoke(app, list(args))
        finally:  # the command's process would exit: its connection ends with it
            for client in made:
                client.close()

    return invoke


def test_a_slow_publish_is_waited_for(slow_cli: Any, platform: Platform, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print('hi')\n")
    res = slow_cli("publish", str(tmp_path), "--name", "slow")
    assert res.exit_code == 0, res.output
    assert "Published slow v1" in res.output


def test_a_slow_deploy_is_waited_for(slow_cli: Any, platform: Platform, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print('hi')\n")
    res = slow_cli("service", "deploy", str(tmp_path), "--name", "web", "--detach", "--json")
    assert res.exit_code == 0, res.output
    assert '"version": 1' in res.output
