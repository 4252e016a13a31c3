"""`orch publish` and `orch agents delete` against the in-process API: output, confirmation,
refusals and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from orch.cli import client as client_mod
from orch.cli import utils as cli_utils
from orch.cli.main import app
from orch.services.platform import Platform
from orch.workers import build_queue
from tests.conftest import drain

runner = CliRunner()


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]):
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input)

    return invoke


def agent_dir(tmp_path: Path, name: str, files: dict[str, str]) -> str:
    root = tmp_path / name
    root.mkdir()
    for rel, text in files.items():
        (root / rel).write_text(text)
    return str(root)


def test_publish_counts_files_in_good_grammar(cli, tmp_path: Path) -> None:
    res = cli("publish", agent_dir(tmp_path, "one", {"main.py": "print(1)\n"}), "-n", "hello")
    assert res.exit_code == 0, res.output
    assert "Published hello v1 · main.py (python) · 1 file, " in res.output
    res = cli("publish", agent_dir(tmp_path, "two", {"main.py": "", "util.py": ""}), "-n", "hello")
    assert "Published hello v2 · main.py (python) · 2 files, " in res.output


def test_publish_warns_when_the_pinned_environment_failed(cli, tmp_path: Path, platform: Platform) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM e2bdev/code-interpreter:latest\nRUN exit 1\n")
    cli("env", "create", "-f", str(dockerfile), "-n", "broken", "--detach")
    drain(platform)
    path = agent_dir(tmp_path, "pinned", {"main.py": "", "orch.yaml": "environment: broken\n"})
    res = cli("publish", path, "-n", "hello")
    assert res.exit_code == 0, res.output
    assert "! orch.yaml pins environment broken, whose last build failed (Step 2/2" in res.output
    data = json.loads(cli("publish", path, "-n", "hello", "--json").output)
    assert "whose last build failed" in data["notes"][0]


def test_delete_asks_refuses_and_deletes(
    cli, tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("publish", agent_dir(tmp_path, "v1", {"main.py": "print(1)\n"}), "-n", "hello")
    cli("publish", agent_dir(tmp_path, "v2", {"main.py": "print(2)\n"}), "-n", "hello")
    queued = cli("run", "hello", "--detach").output.strip()  # of v2; no worker runs it

    res = cli("agents", "delete", "hello")  # no terminal, no --yes
    assert res.exit_code == 2 and "Deleting agent hello" in res.output and "--yes" in res.output
    res = cli("agents", "delete", "hello", "--yes")
    assert res.exit_code == 2 and "has not ended" in res.output and "orch runs cancel" in res.output
    assert "Traceback" not in res.output
    res = cli("agents", "delete", "hello", "--version", "7", "--yes")
    assert res.exit_code == 2 and "hello has no version 7." in res.output

    # With a terminal it asks, and says what goes.
    monkeypatch.setattr(cli_utils, "terminal_input", lambda: True)
    res = cli("agents", "delete", "hello", "--version", "1", input="n\n")
    assert res.exit_code == 1 and "Delete hello v1, and no past runs?" in res.output
    assert res.stderr == "Nothing was deleted.\n"
    res = cli("agents", "delete", "hello", "--version", "1", input="y\n")
    assert res.exit_code == 0, res.output
    assert "Deleted hello v1 and 0 past runs." in res.output and "latest version: v2" in res.output

    assert cli("runs", "cancel", queued).exit_code == 0
    res = cli("agents", "delete", "hello", input="y\n")
    assert "its 1 version, and 1 past run (with their output)?" in res.output
    assert (
        res.exit_code == 0
        and "Deleted hello (agt_" in res.output
        and "1 version and 1 past run." in res.output
    )
    res = cli("agents", "list", "--json")
    assert json.loads(res.output) == []
    res = cli("agents", "delete", "hello", "--yes")
    assert res.exit_code == 2 and "No agent 'hello'" in res.output


def test_delete_json_and_the_environments_it_leaves(cli, tmp_path: Path, platform: Platform) -> None:
    files = {"main.py": "", "Dockerfile": "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"}
    res = cli("publish", agent_dir(tmp_path, "docked", files), "-n", "docked", "--docker", "--detach")
    assert res.exit_code == 0, res.output
    drain(platform)
    res = cli("agents", "delete", "docked", "--yes")
    assert res.exit_code == 0, res.output
    assert "environment docked-dockerfile, built from its Dockerfile, is no longer used" in res.output
    assert "`orch env delete docked-dockerfile`" in res.output
    assert cli("env", "delete", "docked-dockerfile", "--yes").exit_code == 0

    cli("publish", agent_dir(tmp_path, "a", {"main.py": "print(1)\n"}), "-n", "hello")
    cli("publish", agent_dir(tmp_path, "b", {"main.py": "print(2)\n"}), "-n", "hello")
    data = json.loads(cli("agents", "delete", "hello", "--version", "2", "--yes", "--json").output)
    assert data["deleted_versions"] == [2] and data["latest_version"] == 1
    assert json.loads(cli("agents", "show", "hello", "--json").output)["latest_version"] == 1


def test_a_name_with_url_characters_names_that_one_agent(cli, tmp_path: Path) -> None:
    # Each name goes in the path as one escaped segment: '?' and '/' must not turn it into
    # another agent's name or another route (once, `delete 'victim?typo'` deleted victim).
    path = agent_dir(tmp_path, "victim", {"main.py": "print(1)\n"})
    assert cli("publish", path, "-n", "victim").exit_code == 0
    for ref in ("victim?typo", "victim/versions/1", "victim#x", "victim%2Fversions%2F1", "victim "):
        res = cli("agents", "delete", ref, "--yes")
        assert res.exit_code == 2, (ref, res.output)
        assert "This is a bug" not in res.output and "does not take" not in res.output
    res = cli("publish", path, "-n", "a b")
    assert res.exit_code == 2 and "Agent name 'a b' is not valid" in res.output
    # The name rule, said before anything is sent: `a/b` got the API's sentence about an escaped
    # '/' in a path, and `--name ''` was taken as no --name (found by a tester).
    for bad in ("a/b", ""):
        for args in (("publish", path), ("service", "deploy", path)):
            res = cli(*args, "--name", bad)
            assert res.exit_code == 2, (args, bad, res.output)
            assert f"name {bad!r} is not valid" in res.output and "escaped" not in res.output
    assert [a["name"] for a in json.loads(cli("agents", "list", "--json").output)] == ["victim"]
    shown = json.loads(cli("agents", "show", "victim", "--json").output)
    assert [v["version"] for v in shown["versions"]] == [1]


def test_a_manifest_that_is_not_utf8_exits_2(cli, tmp_path: Path) -> None:
    root = Path(agent_dir(tmp_path, "latin", {"main.py": "print(1)\n"}))
    (root / "orch.yaml").write_bytes(b'name: "caf\xe9"\n')
    res = cli("publish", str(root))
    assert res.exit_code == 2 and "orch.yaml is not UTF-8 text (byte 10)." in res.output
    assert "Save orch.yaml as UTF-8." in res.output and "This is a bug" not in res.output


def test_publish_docker_exits_1_when_the_build_it_waited_for_failed(
    cli, tmp_path: Path, platform: Platform
) -> None:
    files = {"main.py": "", "Dockerfile": "FROM e2bdev/code-interpreter:latest\nRUN exit 1\n"}
    workers = build_queue(platform, poll=0.05)  # the build runs while the CLI follows it
    workers.start()
    try:
        res = cli("publish", agent_dir(tmp_path, "fails", files), "-n", "fails", "--docker")
    finally:
        workers.stop()
    # Published, but it can't run: a script must be able to tell.
    assert res.exit_code == 1, res.output
    assert "Published fails v1" in res.output and "Environment fails-dockerfile failed to build" in res.output
    assert "fix the Dockerfile and publish again" in res.output


def test_a_version_delete_warns_when_the_new_latest_cannot_run(
    cli, tmp_path: Path, api: httpx.Client
) -> None:
    env = {"name": "inuse2", "dockerfile": "FROM e2bdev/code-interpreter:latest\n"}
    assert api.post("/v1/environments", json=env).status_code == 201
    pinned = agent_dir(tmp_path, "pin", {"main.py": "", "orch.yaml": "environment: inuse2\n"})
    assert cli("publish", pinned, "-n", "pin").exit_code == 0
    assert cli("publish", agent_dir(tmp_path, "later", {"main.py": "print(2)\n"}), "-n", "pin").exit_code == 0
    assert api.delete("/v1/environments/inuse2").status_code == 200
    res = cli("agents", "delete", "pin", "--version", "2", "--yes")
    assert res.exit_code == 0, res.output
    assert "latest version: v1" in res.output
    assert "! Runs of v1, the latest version now, will fail: The pinned environment 'inuse2' no longer" in (
        " ".join(res.output.split())
    )
