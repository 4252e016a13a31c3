"""What a bundle's Dockerfile is told of, at `orch publish --docker` and `orch service deploy`:
its warnings, a note each in the answer (a CMD or ENTRYPOINT says what runs instead), and, when
it is rejected, every finding, not only the first error (found by a tester: the user fixed one
error, deployed again, then learned of the next)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from orch.bundle import pack_directory
from orch.cli import client as client_mod
from orch.cli.main import app

runner = CliRunner()

BASE = "FROM e2bdev/code-interpreter:latest\n"
# Every kind of warning: the directive, then the instructions left out of the build.
WARNED = (
    "# syntax=docker/dockerfile:1\n"
    + BASE
    + "RUN true\n"
    + 'ENTRYPOINT ["python3", "main.py"]\n'
    + 'CMD ["python", "-m", "http.server"]\n'
    + "HEALTHCHECK CMD true\n"
    + "STOPSIGNAL SIGINT\n"
    + "MAINTAINER me\n"
)
# Three errors (and no warning): all three are said.
REJECTED = "FROM node:20\nCOPY package.json .\nRUN npm install\nEXPOSE 3000\n"


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]):
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")
    return lambda *args: runner.invoke(app, list(args))


def directory(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    root = tmp_path / name
    root.mkdir()
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def publish(api: httpx.Client, name: str, root: Path, docker: bool = True) -> httpx.Response:
    return api.post(
        f"/v1/agents/{name}/versions",
        params={"docker": "true" if docker else "false"},
        content=pack_directory(root).data,
        headers={"Content-Type": "application/gzip"},
    )


def deploy(api: httpx.Client, name: str, root: Path, command: str | None = None) -> httpx.Response:
    return api.post(
        f"/v1/services/{name}/deploy",
        params={"command": command} if command is not None else {},
        content=pack_directory(root).data,
        headers={"Content-Type": "application/gzip"},
    )


def dockerfile_notes(notes: list[str]) -> list[str]:
    return [n for n in notes if n.startswith("Dockerfile")]


def test_publish_docker_notes_each_warning_and_what_runs_instead(api: httpx.Client, tmp_path: Path) -> None:
    resp = publish(api, "warned", directory(tmp_path, "a", {"main.py": "", "Dockerfile": WARNED}))
    assert resp.status_code == 201, resp.text
    notes = dockerfile_notes(resp.json()["notes"])
    assert [n.split(":")[0] for n in notes] == [f"Dockerfile line {n}" for n in (1, 4, 5, 6, 7, 8)]
    assert notes[0].startswith("Dockerfile line 1: The # syntax directive is ignored")
    instead = (
        "The agent runs `python main.py` instead (the default for its entrypoint; "
        "`runtime.command` in orch.yaml sets another)."
    )
    assert notes[1] == (
        "Dockerfile line 4: ENTRYPOINT is ignored: the sandbox sets its own command. "
        f"{instead} Remove it, or keep it for local use."
    )
    assert notes[2].startswith("Dockerfile line 5: CMD is ignored") and instead in notes[2]
    assert notes[3].startswith("Dockerfile line 6: HEALTHCHECK is ignored") and "instead" not in notes[3]
    assert notes[4].startswith("Dockerfile line 7: STOPSIGNAL is ignored")
    assert (
        notes[5]
        == 'Dockerfile line 8: MAINTAINER is deprecated and ignored. Use LABEL maintainer="..." instead.'
    )


def test_the_note_names_orch_yamls_command(api: httpx.Client, tmp_path: Path) -> None:
    files = {
        "main.py": "",
        "orch.yaml": "runtime:\n  command: python main.py --fast\n",
        "Dockerfile": BASE + "CMD python app.py\n",
    }
    resp = publish(api, "commanded", directory(tmp_path, "a", files))
    assert resp.status_code == 201, resp.text
    [note] = dockerfile_notes(resp.json()["notes"])
    assert "The agent runs `python main.py --fast` instead (orch.yaml's `runtime.command`)." in note


def test_a_dockerfile_without_warnings_or_not_built_has_no_such_notes(
    api: httpx.Client, tmp_path: Path
) -> None:
    resp = publish(api, "plain", directory(tmp_path, "a", {"main.py": "", "Dockerfile": BASE}))
    assert resp.status_code == 201 and resp.json()["notes"] == []
    # Not built (no --docker): the note says so; what a build would leave out is not told.
    resp = publish(
        api, "unused", directory(tmp_path, "b", {"main.py": "", "Dockerfile": WARNED}), docker=False
    )
    assert resp.status_code == 201 and dockerfile_notes(resp.json()["notes"]) == []


def test_deploy_notes_each_warning_and_what_the_service_runs(api: httpx.Client, tmp_path: Path) -> None:
    files = {"main.py": "", "Dockerfile": BASE + 'CMD ["python", "-m", "http.server"]\n'}
    resp = deploy(api, "web", directory(tmp_path, "a", files))
    assert resp.status_code == 201, resp.text
    assert dockerfile_notes(resp.json()["notes"]) == [
        "Dockerfile line 2: CMD is ignored: the sandbox sets its own command. The service runs "
        "`python main.py` instead (the default for its entrypoint; `runtime.command` in orch.yaml "
        "sets another). Remove it, or keep it for local use."
    ]
    resp = deploy(api, "api", directory(tmp_path, "b", files), command="python main.py 'two words'")
    assert resp.status_code == 201, resp.text
    [note] = dockerfile_notes(resp.json()["notes"])
    assert "The service runs `python main.py 'two words'` instead (the command given to the deploy)." in note


def test_the_cli_prints_the_notes_of_publish_and_deploy(cli, tmp_path: Path) -> None:
    files = {"main.py": "", "Dockerfile": BASE + "ENTRYPOINT python3 main.py\n"}
    res = cli("publish", str(directory(tmp_path, "a", files)), "-n", "ag", "--docker", "--detach")
    assert res.exit_code == 0, res.output
    assert (
        "! Dockerfile line 2: ENTRYPOINT is ignored: the sandbox sets its own command. The agent runs"
        in res.stdout
    )
    res = cli("publish", str(directory(tmp_path, "b", files)), "-n", "ag", "--docker", "--detach", "--json")
    assert res.exit_code == 0, res.output
    [note] = json.loads(res.stdout)["notes"]
    assert note.startswith("Dockerfile line 2: ENTRYPOINT is ignored")
    res = cli("service", "deploy", str(directory(tmp_path, "c", files)), "-n", "svc", "--detach")
    assert res.exit_code == 0, res.output
    assert "! Dockerfile line 2: ENTRYPOINT is ignored" in res.stdout and "The service runs" in res.stdout


@pytest.mark.parametrize(
    ("args", "nothing"),
    [(("publish", "--docker"), "published"), (("service", "deploy", "--detach"), "deployed")],
)
def test_a_rejected_dockerfile_is_said_with_every_finding(
    cli, api: httpx.Client, tmp_path: Path, args: tuple[str, ...], nothing: str
) -> None:
    root = str(directory(tmp_path, "a", {"main.py": "", "Dockerfile": REJECTED}))
    res = cli(*args, root, "-n", "rejected")
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert lines[0] == f"✗ The bundle's Dockerfile was rejected (3 errors); nothing was {nothing}."
    assert [line.split("  ")[1:3] for line in lines[1:]] == [
        ["line 1", "FROM"],
        ["line 2", "COPY"],
        ["line 4", "EXPOSE"],
    ]
    assert "COPY package.json is not supported: builds have no build context" in lines[2] and res.stdout == ""
    # --json: the error on stdout, with every finding, as the API answers it.
    res = cli(*args, root, "-n", "rejected", "--json")
    assert res.exit_code == 2, res.output
    error = json.loads(res.stdout)
    assert error["error"] == "invalid_dockerfile"
    assert error["message"].startswith("The bundle's Dockerfile is not valid: line 1 FROM")
    assert [(f["line"], f["instruction"], f["severity"]) for f in error["findings"]] == [
        (1, "FROM", "error"),
        (2, "COPY", "error"),
        (4, "EXPOSE", "error"),
    ]
    assert api.get("/v1/agents").json() == [] and api.get("/v1/services").json() == []
