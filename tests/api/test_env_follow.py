"""Following an environment's build with the CLI (`orch env logs -f`, `orch env status
--follow`, `orch env build`) while something else happens to it: a second Ctrl-C, a delete, a
build asked for without the cache."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import httpx
import pytest
from typer.testing import Result

from orch.cli import env as env_cli
from orch.cli.terminal_text import TerminalText
from orch.services.platform import Platform
from tests.api.test_build_logs import cli  # noqa: F401 - fixture
from tests.conftest import drain

SLOW = "FROM e2bdev/code-interpreter:latest\nRUN echo slow\n"


def test_a_second_ctrl_c_while_logs_f_ends_still_exits_0(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    api: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
) -> None:
    """`timeout -s INT` signals the command and then its process group: the second SIGINT came
    while the first was being handled, and about 1 in 5 ended with 130 and `Interrupted.`."""
    api.post("/v1/environments", json={"name": "slow", "dockerfile": SLOW})  # queued: followed
    monkeypatch.setattr(env_cli.time, "sleep", lambda _s: os.kill(os.getpid(), signal.SIGINT))
    real_end = TerminalText.end

    def end(self: TerminalText) -> None:  # the second one, as the first is handled
        os.kill(os.getpid(), signal.SIGINT)
        real_end(self)

    monkeypatch.setattr(TerminalText, "end", end)
    res = cli("env", "logs", "slow", "-f")
    assert res.exit_code == 0, res.output
    assert "Interrupted" not in res.output


def test_following_a_build_whose_environment_is_deleted_says_so(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    api: httpx.Client,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    workspace: tuple[str, str],
) -> None:
    """It said `No environment 'env_…' in this workspace`, exit 2."""
    from orch.services import environments as envs

    api.post("/v1/environments", json={"name": "doomed", "dockerfile": SLOW})

    def deleted(_seconds: float) -> None:  # deleted while the follower waits
        envs.delete(platform, workspace[0], "doomed")

    monkeypatch.setattr(env_cli.time, "sleep", deleted)
    for args in (("env", "logs", "doomed", "-f"), ("env", "status", "doomed", "--follow")):
        api.post("/v1/environments", json={"name": "doomed", "dockerfile": SLOW})
        res = cli(*args)
        assert res.exit_code == 1, res.output
        assert "The environment doomed was deleted while it was being built" in res.output
        assert "No environment" not in res.output


def test_no_cache_during_a_build_with_the_cache_says_why_it_is_refused(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    api: httpx.Client,
) -> None:
    api.post("/v1/environments", json={"name": "conc", "dockerfile": SLOW})
    building = api.get("/v1/environments/conc").json()["build_id"]
    res = cli("env", "build", "conc", "--no-cache")
    assert res.exit_code == 2
    assert f"conc is already being built ({building}) with the cache, so a build without it" in res.output
    assert "(--no-cache) can't start until that one has ended" in res.output
    assert "then run `orch env build conc --no-cache`" in res.output
    assert api.get("/v1/environments/conc").json()["build_id"] == building


def test_no_cache_during_a_build_without_it_follows_that_build(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    api: httpx.Client,
    platform: Platform,
) -> None:
    """The build under way is what was asked for: followed, as the plain form follows one."""
    api.post("/v1/environments", json={"name": "conc", "dockerfile": SLOW})
    drain(platform)
    assert cli("env", "build", "conc", "--no-cache", "-d").exit_code == 0
    building = api.get("/v1/environments/conc").json()["build_id"]
    res = cli("env", "build", "conc", "--no-cache", "-d")
    assert res.exit_code == 0, res.output
    assert f"conc is already being built ({building}); no other build was queued." in res.output
    assert api.get("/v1/environments/conc").json()["build_id"] == building
