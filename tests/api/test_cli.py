"""The CLI against the in-process API: output, --json contracts, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from orch.cli import client as client_mod
from orch.cli.main import app
from orch.services.platform import Platform
from orch.workers import build_queue
from tests.conftest import drain

runner = CliRunner()
GOOD = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\nCMD python\n"


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]):
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input)

    return invoke


@pytest.fixture
def dockerfile(tmp_path: Path) -> Path:
    path = tmp_path / "Dockerfile"
    path.write_text(GOOD)
    return path


def test_create_detached_then_status_json(cli, dockerfile: Path, platform: Platform) -> None:
    res = cli("env", "create", "-f", str(dockerfile), "-n", "mine", "--detach")
    assert res.exit_code == 0, res.output
    assert "Dockerfile valid (1 warning)" in res.output and "line 3  CMD" in res.output
    assert "Queued env_" in res.output
    drain(platform)
    data = json.loads(cli("env", "status", "mine", "--json").output)
    assert {"id", "name", "kind", "status", "cache", "cache_reason", "build_id", "error"} <= set(data)
    assert data["status"] == "ready" and data["kind"] == "custom" and data["cache"] == "miss"


def test_list_json_contract(cli) -> None:
    data = json.loads(cli("env", "list", "--json").output)
    assert all({"id", "name", "kind", "status", "default"} <= set(e) for e in data)
    assert {e["kind"] for e in data} == {"base", "predefined"}
    table = cli("env", "list").output
    assert "python-ml" in table and "predefined" in table and "not-built" in table


def test_cache_hit_is_ready_at_once(cli, dockerfile: Path, platform: Platform) -> None:
    cli("env", "create", "-f", str(dockerfile), "-n", "one", "--detach")
    drain(platform)
    res = cli("env", "create", "-f", str(dockerfile), "-n", "two")
    assert res.exit_code == 0
    assert "Ready at once · cache hit (same Dockerfile as one" in res.output


def test_validate_offline(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> None:
        raise AssertionError("validate must not contact the server")

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(unreachable))
    bad = tmp_path / "bad"
    bad.write_text("FROM e2bdev/code-interpreter:latest\nEXPOSE 80\n")
    res = cli("env", "validate", "-f", str(bad), "--json")
    assert res.exit_code == 2
    out = json.loads(res.output)
    assert out["ok"] is False
    assert out["findings"][0] == {
        **out["findings"][0],
        "line": 2,
        "instruction": "EXPOSE",
        "severity": "error",
    }
    good = tmp_path / "good"
    good.write_text(GOOD)
    res = cli("env", "validate", "-f", str(good))
    assert res.exit_code == 0 and "valid (1 warning)" in res.output
    res = cli("env", "validate", "-f", "-", input=GOOD)
    assert res.exit_code == 0


def test_rejected_create_exits_2_and_creates_nothing(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("FROM ubuntu:22.04\nRUN true\n")
    res = cli("env", "create", "-f", str(bad), "-n", "x")
    assert res.exit_code == 2 and "line 1" in res.output and "nothing was created" in res.output
    assert "x" not in [e["name"] for e in json.loads(cli("env", "list", "--json").output)]


def test_errors_are_sentences_not_tracebacks(cli, dockerfile: Path) -> None:
    res = cli("env", "status", "nope")
    assert res.exit_code == 2 and "No environment 'nope'" in res.output and "Traceback" not in res.output
    res = cli("env", "delete", "python-ml", "--yes")
    assert res.exit_code == 2 and "can't be deleted" in res.output
    res = cli("env", "create", "-f", str(dockerfile), "-n", "Bad Name")
    assert res.exit_code == 2 and "is not valid" in res.output
    res = cli("env", "create", "-f", "/nonexistent/Dockerfile", "-n", "x")
    assert res.exit_code == 2 and "There is no file" in res.output
    res = cli("env", "create", "-n", "x")
    assert res.exit_code == 2  # missing -f: click's usage error


def test_default_cycle(cli, dockerfile: Path, platform: Platform) -> None:
    cli("env", "create", "-f", str(dockerfile), "-n", "mine", "--detach")
    drain(platform)
    res = cli("env", "set-default", "mine")
    assert res.exit_code == 0 and "Workspace default is now mine" in res.output
    assert "will use it (none does yet)." in res.output  # not "0 agents ... will use it"
    assert any(e["default"] and e["name"] == "mine" for e in json.loads(cli("env", "list", "--json").output))
    res = cli("env", "delete", "mine", "--yes")
    assert (
        res.exit_code == 2 and "workspace default" in res.output and "`orch env clear-default`" in res.output
    )
    assert "cleared (was mine)" in cli("env", "clear-default").output
    assert "no default" in cli("env", "clear-default").output
    res = cli("env", "delete", "mine")  # no terminal, no --yes
    assert res.exit_code == 2 and "--yes" in res.output
    assert cli("env", "delete", "mine", "--yes").exit_code == 0


def test_failed_build_exits_1(cli, tmp_path: Path, platform: Platform) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text("FROM e2bdev/code-interpreter:latest\nRUN exit 1\n")
    cli("env", "create", "-f", str(path), "-n", "broken", "--detach")
    drain(platform)
    res = cli("env", "status", "broken")
    assert res.exit_code == 1 and "Build failed: Step 2/2" in res.output


def test_no_server_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORCH_HOME", str(tmp_path))
    monkeypatch.delenv("ORCH_URL", raising=False)
    res = runner.invoke(app, ["env", "list"])
    assert res.exit_code == 1 and "No orch server is configured" in res.output
    monkeypatch.setenv("ORCH_URL", "http://127.0.0.1:9")
    res = runner.invoke(app, ["env", "list"])
    assert res.exit_code == 1 and "Cannot reach the orch server" in res.output


def test_a_port_the_server_cannot_have_is_refused_with_the_option_to_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    monkeypatch.setenv("ORCH_HOME", str(tmp_path))
    res = runner.invoke(app, ["server", "--port", "8760", "--services-port", "8760"])
    assert res.exit_code == 2
    assert (
        "The server's port and services_port are both 8760" in res.output
        and "ORCH_SERVICES_PORT" in res.output
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = runner.invoke(app, ["server", "--port", "0", "--services-port", str(port)])
    assert res.exit_code == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in res.output and "pass --services-port" in res.output
    assert not (tmp_path / "orch.db").exists()  # refused before anything was made


@pytest.mark.parametrize("args", [["--port", "70000"], ["--services-port", "-1"]])
def test_a_port_number_out_of_range_is_refused_before_anything_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str]
) -> None:
    monkeypatch.setenv("ORCH_HOME", str(tmp_path))
    res = runner.invoke(app, ["server", *args])
    assert res.exit_code == 2
    assert f"Invalid value for '{args[0]}'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "orch.db").exists()


def test_a_followed_build_piped_prints_no_blank_line_for_its_bar(
    cli, dockerfile: Path, platform: Platform
) -> None:
    workers = build_queue(platform, poll=0.05)  # the build runs while the CLI follows it
    workers.start()
    try:
        res = cli("env", "create", "-f", str(dockerfile), "-n", "piped")
    finally:
        workers.stop()
    assert res.exit_code == 0 and "✓ Ready in" in res.output, res.output
    assert "\n\n" not in res.output  # a bar that can't redraw left an empty line behind it
