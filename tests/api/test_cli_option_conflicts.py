"""Options that contradict each other are refused with the fix, exit 2, before anything is done
(`orch env logs -f --json` was, `env create`/`env build --detach --logs` dropped --logs without a
word); `--logs --json` goes together: the JSON on stdout at the end, the log streamed on stderr
(it was dropped: a script asking for the build's log got none). docs/cli.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import Result

from orch.cli import env as env_cli
from orch.services.platform import Platform
from tests.api.test_build_logs import cli  # noqa: F401 - fixture
from tests.conftest import drain

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"


@pytest.fixture
def dockerfile(tmp_path: Path) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE)
    return path


def test_detach_with_logs_is_refused_before_anything_is_created(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    api: httpx.Client,
    dockerfile: Path,
) -> None:
    python = api.get("/v1/environments/python").json()
    for args in (
        ("env", "create", "-f", str(dockerfile), "-n", "mine", "--detach", "--logs"),
        ("env", "create", "-f", str(dockerfile), "-n", "mine", "--logs", "--detach", "--json"),
        ("env", "build", "python", "--no-cache", "--detach", "--logs"),
    ):
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stdout == "", args  # no "Dockerfile valid", no JSON: nothing was done
        assert "✗ --detach and --logs don't go together" in res.stderr, res.stderr
        assert "Leave out one of them" in res.stderr
    names = {e["name"] for e in api.get("/v1/environments").json()}
    assert "mine" not in names
    after = api.get("/v1/environments/python").json()  # no build was queued
    assert (after["status"], after["build_id"]) == (python["status"], python["build_id"])


def test_logs_with_json_streams_the_log_on_stderr(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    platform: Platform,
    dockerfile: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(env_cli.time, "sleep", lambda _s: drain(platform))  # the build runs then
    for args in (
        ("env", "create", "-f", str(dockerfile), "-n", "mine", "--logs", "--json"),
        ("env", "build", "mine", "--no-cache", "--logs", "--json"),
    ):
        res = cli(*args)
        assert res.exit_code == 0, (args, res.output)
        data = json.loads(res.stdout)  # stdout holds the JSON alone
        assert (data["name"], data["status"]) == ("mine", "ready")
        assert "STEP 2/2: RUN pip install six" in res.stderr, (args, res.stderr)
    quiet = cli("env", "build", "mine", "--no-cache", "--json")  # without --logs: no log anywhere
    assert quiet.exit_code == 0 and json.loads(quiet.stdout)["status"] == "ready"
    assert "STEP" not in quiet.stderr, quiet.stderr
    followed = cli("env", "status", "mine", "--follow", "--json")  # as before: the JSON only
    assert followed.exit_code == 0 and "STEP" not in followed.stderr, followed.stderr
