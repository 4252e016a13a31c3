"""What a failed or refused deploy says, and where its output is: each message names the fix."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services import deployed_logs
from orch.services.platform import Platform
from tests.api.test_services import answering as answering  # autouse: new containers answer
from tests.api.test_services import bundle, deploy, deployed, work
from tests.api.test_services import cli as cli  # a fixture


@pytest.fixture
def crashing(fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """New containers print these lines (to stderr) and exit with code 1 at once."""
    lines: list[str] = []
    start = fake_engine.start_container

    def started(spec, log_path: Path, log_max: int) -> str:  # type: ignore[no-untyped-def]
        cid = start(spec, log_path, log_max)
        log_path.write_text("".join(f"2026-01-01T00:00:00Z stderr F {line}\n" for line in lines))
        fake_engine.exit_container(spec.name, 1)
        return cid

    monkeypatch.setattr(fake_engine, "start_container", started)
    return lines


def test_a_service_that_does_not_answer_is_told_to_listen_on_all_interfaces(
    api: httpx.Client, platform: Platform, tmp_path: Path, answering: list[bool]
) -> None:
    answering[0] = False  # as a server bound to 127.0.0.1 inside its container
    platform.config = platform.config.with_values(service_start_timeout=1)
    assert deploy(api, "web", bundle(tmp_path, {"main.py": ""})).status_code == 201
    work(platform)
    error = api.get("/v1/services/web/deployments/1").json()["error"]
    assert error.startswith("The new version did not answer on port 8080 within 1 s. A service must")
    assert "listen on all interfaces (0.0.0.0, not 127.0.0.1 or localhost), on the port in $PORT" in error


def test_a_failing_run_command_is_named(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path, crashing: list[str]
) -> None:
    crashing += ["E: Unable to locate package nope", "orch: run_command failed with exit code 1"]
    files = {"main.py": "", "orch.yaml": "run_command: apt-get install -y nope\n"}
    assert deploy(api, "web", bundle(tmp_path, files)).status_code == 201
    work(platform)
    error = api.get("/v1/services/web/deployments/1").json()["error"]
    assert error.startswith(
        "The new version's run_command (orch.yaml) failed with exit code 1, before its command started."
    )
    assert "Unable to locate package nope" in error
    # Without the line a failing run_command prints, the command is what exited.
    crashing[:] = ["Traceback: boom"]
    assert deploy(api, "web", bundle(tmp_path, {**files, "main.py": "# v2\n"}, "v2")).status_code == 201
    work(platform)
    error = api.get("/v1/services/web/deployments/2").json()["error"]
    assert error.startswith("The new version exited with exit code 1 before it answered on port 8080.")


def test_the_container_prints_that_line_when_run_command_fails(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """The container's script, run by a real shell: the line when run_command fails, nothing (and
    the command, with run_command's directory and variables) when it succeeds."""
    files = {"main.py": "", "orch.yaml": 'run_command: "cd /tmp && export X=1"\n'}
    deployed(api, platform, tmp_path, **files)
    drop = "setpriv --reuid=1000 --regid=1000 --clear-groups --"  # not this test's to do
    script = fake_engine.started[-1].argv[2].replace(f"exec {drop}", "exec")
    ok = subprocess.run(
        ["sh", "-c", script, "x", "sh", "-c", 'echo "$X $PWD"'], capture_output=True, text=True
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "1 /tmp\n", "")
    failing = script.replace("cd /tmp && export X=1", "echo trying && exit 100")
    bad = subprocess.run(["sh", "-c", failing, "x", "true"], capture_output=True, text=True)
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        100,
        "trying\n",
        "orch: run_command failed with exit code 100\n",
    )


def test_a_loop_section_is_refused_before_its_settings_are_checked(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    files = {"main.py": "", "orch.yaml": "name: bot\nloop:\n  provider: nobody\n  base_url: ftp://x\n"}
    resp = deploy(api, "bot", bundle(tmp_path, files))
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["message"] == (
        "orch.yaml line 2: loop: managed loops are not supported for services "
        "(the platform runs a loop only for a run)."
    )
    assert body["fix"] == "Remove loop: from orch.yaml and give the service an entrypoint to run."
    assert api.get("/v1/services").json() == []


def test_a_failed_first_deploy_says_its_error_once_and_its_output_is_in_the_logs(
    cli, platform: Platform, tmp_path: Path, crashing: list[str]
) -> None:
    crashing.append("boom: missing DATABASE_URL")
    root = tmp_path / "crash"
    root.mkdir()
    (root / "main.py").write_text("")
    assert cli("service", "deploy", str(root), "--detach").exit_code == 0
    work(platform)
    res = cli("service", "status", "crash")
    assert res.exit_code == 0, res.output
    # `\bv0\b`: a service's random id may hold "v0" (svc_3twnfnv024 did)
    assert "no version deployed" in res.output and not re.search(r"\bv0\b", res.output)
    listed = cli("service", "list").output
    assert "crash" in listed and not re.search(r"\bv0\b", listed), listed  # `-`: no version (a tester)
    assert res.output.count("boom: missing DATABASE_URL") == 1, res.output
    assert res.output.count("exited with exit code 1") == 1
    res = cli("service", "logs", "crash")
    assert res.exit_code == 0 and res.output == "boom: missing DATABASE_URL\n"
    assert not list(deployed_logs.directory(platform, _id(cli, "crash")).iterdir())  # stored, not left


def _id(cli, name: str) -> str:
    return str(json.loads(cli("service", "status", name, "--json").output)["id"])


def test_the_command_is_shown_as_a_shell_would_read_it(cli, platform: Platform, tmp_path: Path) -> None:
    root = tmp_path / "api"
    root.mkdir()
    (root / "main.py").write_text("")
    res = cli("service", "deploy", str(root), "--detach", "--command", "python main.py 'two words' ''")
    assert res.exit_code == 0, res.output
    assert "→ api v1 · python main.py 'two words' '' · private" in res.output
    work(platform)
    assert "command   python main.py 'two words' ''" in cli("service", "status", "api").output
    data = json.loads(cli("service", "status", "api", "--json").output)
    assert data["command"] == ["python", "main.py", "two words", ""]


def test_cli_refuses_a_loop_section_first_whatever_its_settings(
    cli, api: httpx.Client, tmp_path: Path
) -> None:
    """Before, the CLI packed the directory first, as an agent's (publish's rules): a loop's
    settings and the other keys were checked, with advice that could never make a service."""
    root = tmp_path / "m2"
    root.mkdir()
    (root / "main.py").write_text("")
    (root / "orch.yaml").write_text("loop: {provider: openai, model: gpt-4o-mini}\nreplicas: 0\n")
    res = cli("service", "deploy", str(root))
    assert res.exit_code == 2, res.output
    assert "orch.yaml line 1: loop: managed loops are not supported for services" in res.output
    assert "api_key_secret" not in res.output and "replicas" not in res.output
    assert api.get("/v1/services").json() == []


def test_cli_refuses_a_command_too_long_for_the_request_with_a_sentence(
    cli, api: httpx.Client, tmp_path: Path
) -> None:
    """Before, ~70,000 characters went into the query string, and the server's HTTP parser
    refused the request line before the API saw it: "The server answered 400 Bad Request.", exit 1."""
    root = tmp_path / "echo"
    root.mkdir()
    (root / "main.py").write_text("")
    res = cli("service", "deploy", str(root), "--detach", "--command", "python main.py " + "y" * 70_000)
    assert res.exit_code == 2, res.output
    assert "The command is 70,015 characters long; a service's command is at most 4,096." in res.output
    assert "Bad Request" not in res.output and api.get("/v1/services").json() == []


def test_a_failed_dockerfile_build_points_to_its_log_after_the_deploy_s_own_lines(
    cli, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the deployment's error did not name `orch env logs` (its fix, which said it, is
    not kept), and the CLI printed the deployment's log ("waiting for environment ...") after
    the line that said the build failed."""
    import threading
    import time
    import types

    import orch.cli.service as service_cli
    from tests.conftest import drain

    root = tmp_path / "dfail"
    root.mkdir()
    (root / "main.py").write_text("")
    (root / "Dockerfile").write_text("FROM e2bdev/code-interpreter:latest\nRUN echo failing-step && exit 1\n")
    worker: list[threading.Thread] = []

    def meanwhile(_seconds: float) -> None:
        """The deploy worker waits for the environment's build, which then fails."""
        if not worker:
            worker.append(threading.Thread(target=work, args=(platform,)))
            worker[0].start()
            time.sleep(0.3)
            drain(platform)
            worker[0].join(10)
        time.sleep(0.05)

    monkeypatch.setattr(service_cli, "time", types.SimpleNamespace(sleep=meanwhile))
    res = cli("service", "deploy", str(root))
    assert res.exit_code == 1, res.output
    failed = res.output.index("✗ Building the Dockerfile (environment dfail-dockerfile) failed:")
    assert "`orch env logs dfail-dockerfile` shows its log." in res.output[failed:]
    waiting = res.output.index("Dockerfile: waiting for environment dfail-dockerfile to be built")
    assert waiting < failed  # the deployment's log, then why it ended
    status = cli("service", "status", "dfail")
    assert "`orch env logs dfail-dockerfile` shows its log." in status.output
