"""Found by testers against docs/cli.md: `orch runs logs RUN | head -1` ended 0, and said its
output was cut after the pipe had closed; Ctrl-C of `orch run AGENT` said `Interrupted.` rather
than `Cancelled run_…` in 2 of 5 tries; `orch secret set NAME <&-` called a closed standard
input a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import Result

from orch.cli import run as run_cli
from orch.client.transport import Transport
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from orch.store.schema import RunRow
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli_runs import cli, worker  # noqa: F401 - fixtures
from tests.conftest import drain_runs

LINES = 200_000  # ~1.3 MB: more than the 1 MiB a run keeps of a stream


def _cli_process(
    served: tuple[str, str], workspace: tuple[str, str], home: Path, *args: str, **popen: Any
) -> subprocess.Popen[bytes]:
    """`orch ARGS` in a process of its own against the served API, unbuffered as in a container
    that sets PYTHONUNBUFFERED (the testers' did): its standard streams write straight to the
    file descriptors."""
    drop = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "FORCE_COLOR", "TTY_COMPATIBLE")
    environ = {k: v for k, v in os.environ.items() if k not in drop}
    environ |= {
        "ORCH_HOME": str(home),
        "ORCH_URL": served[0],
        "ORCH_TOKEN": workspace[1],
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen([sys.executable, "-m", "orch.cli.main", *args], env=environ, **popen)


@pytest.mark.parametrize("follow", [[], ["-f"]])
def test_runs_logs_into_a_closed_pipe_ends_141_quietly(
    served: tuple[str, str],
    workspace: tuple[str, str],
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    follow: list[str],
) -> None:
    """The whole megabyte went out in one write, of which the pipe took what it held before
    `head` closed it: unbuffered, Python dropped the rest without an error, so the command went
    on to say the output was cut, and exited 0."""

    def loud(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        out("".join(f"{i}\n" for i in range(LINES)).encode())
        return ContainerExit(0)

    fake_engine.behaviour = loud
    assert publish(api, "loud", bundle(tmp_path, {"main.py": ""})).status_code == 201
    run_id = api.post("/v1/runs", json={"agent": "loud"}).json()["id"]
    drain_runs(platform)
    assert api.get(f"/v1/runs/{run_id}").json()["truncated"]

    home = tmp_path / "cli"
    args = ("runs", "logs", run_id, *follow)
    with _cli_process(served, workspace, home, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            assert proc.stdout.readline() == b"0\n"  # `head -1`: a line, then the pipe is closed
            proc.stdout.close()
            said = proc.stderr.read()
            ended = proc.wait(60)
        finally:
            proc.kill()
    assert ended == 141, said
    # The platform's notes, which come first; nothing after the pipe closed (not the cut).
    notes = api.get(f"/v1/runs/{run_id}/logs").json()["log"]
    assert notes and said.decode() == "".join(f"{line}\n" for line in notes.splitlines())


class _Hooked:
    """A console that does `act` before printing a line `when` picks, and prints as `real`."""

    def __init__(self, real: Any, when: Callable[[str], bool], act: Callable[[], None]) -> None:
        self.real, self.when, self.act = real, when, act

    def print(self, text: Any = "", **options: Any) -> None:
        if isinstance(text, str) and self.when(text):
            self.act()
        self.real.print(text, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _ctrl_c() -> None:
    """Ctrl-C, as the terminal (or `timeout -s INT`) sends it: SIGINT to this process, whose
    handler runs as the kill returns."""
    os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def queued_agent(api: httpx.Client, tmp_path: Path) -> str:
    """An agent whose runs stay queued (no worker here): followed until Ctrl-C."""
    assert publish(api, "hog", bundle(tmp_path, {"main.py": ""})).status_code == 201
    return "hog"


@pytest.mark.parametrize("second", [None, "the cancel request", "the Cancelled line"])
@pytest.mark.parametrize("first", ["the environment line", "following"])
def test_every_ctrl_c_once_the_run_exists_cancels_it(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    queued_agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
    first: str,
    second: str | None,
) -> None:
    """`timeout -s INT` signals the command, then its process group: the second SIGINT came
    while the first was being answered (the cancel on its way), and the generic handler said
    `Interrupted.`. Each Ctrl-C here is a real SIGINT, sent at the phase named."""
    console = run_cli.err_console
    if first == "the environment line":
        console = _Hooked(console, lambda text: text.startswith("→"), _ctrl_c)
    else:

        def following(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
            _ctrl_c()
            raise AssertionError("Ctrl-C did not interrupt the follow")

        monkeypatch.setattr(run_cli, "follow_output", following)
    if second == "the Cancelled line":
        console = _Hooked(console, lambda text: text.startswith("Cancelled"), _ctrl_c)
    elif second == "the cancel request":
        real_post = Transport.post

        def post(self: Transport, path: str, *args: Any, **kwargs: Any) -> Any:
            if path.endswith("/cancel"):
                _ctrl_c()
            return real_post(self, path, *args, **kwargs)

        monkeypatch.setattr(Transport, "post", post)
    monkeypatch.setattr(run_cli, "err_console", console)

    res = cli("run", queued_agent)
    with platform.store.session() as s:
        run_id, status = s.execute(select(RunRow.id, RunRow.status)).one()
    assert res.exit_code == 130, res.output
    assert f"Cancelled {run_id}." in res.stderr
    assert "Interrupted" not in res.stderr
    assert status == "cancelled"


def test_ctrl_c_once_the_run_has_ended_says_so(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    worker: None,  # noqa: F811 - the fixture
    api: httpx.Client,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
) -> None:
    """Ctrl-C as the end line is printed: the run has nothing left to cancel. The cancel's
    refusal was said as the command's error ("✗ Run … has already ended"), exit 2."""
    fake_engine.behaviour = lambda spec, out, err: ContainerExit(0)
    assert publish(api, "quick", bundle(tmp_path, {"main.py": ""})).status_code == 201
    real_finish = run_cli._finish_line

    def finish(run: dict[str, Any], *args: Any) -> None:
        _ctrl_c()
        real_finish(run, *args)

    monkeypatch.setattr(run_cli, "_finish_line", finish)
    res = cli("run", "quick")
    run_id = api.get("/v1/runs").json()[0]["id"]
    assert res.exit_code == 130, res.output
    assert f"Interrupted; {run_id} had already ended." in res.stderr
    assert "✗" not in res.stderr


def test_a_second_ctrl_c_still_ends_the_wait_of_run_json(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    queued_agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
) -> None:
    """After the first Ctrl-C later ones are ignored, but for `--json`'s wait for the cancelled
    run to end (docs/cli.md: a second Ctrl-C stops the wait and prints the run as it is)."""

    def collect(_client: Any, run_id: str, wait: float = 0) -> dict[str, str]:
        with platform.store.session() as s:  # started: its end waits for a worker (there is none)
            s.execute(update(RunRow).where(RunRow.id == run_id).values(status="running"))
        _ctrl_c()
        raise AssertionError("Ctrl-C did not interrupt the follow")

    waits: list[str] = []

    def waiting(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        waits.append("wait")
        _ctrl_c()  # the second
        raise AssertionError("the second Ctrl-C did not end the wait")

    monkeypatch.setattr(run_cli, "_collect", collect)
    monkeypatch.setattr(run_cli, "follow_output", waiting)
    res = cli("run", queued_agent, "--json")
    assert res.exit_code == 130, res.output
    assert waits == ["wait"]
    assert '"status": "running"' in res.stdout
    assert "Cancelled run_" in res.stderr


def test_secret_set_with_standard_input_closed_says_so(tmp_path: Path) -> None:
    """`orch secret set NAME <&-`: Python has no sys.stdin then, and it was called a terminal."""
    environ = {**os.environ, "ORCH_HOME": str(tmp_path), "ORCH_URL": "http://127.0.0.1:9", "ORCH_TOKEN": "t"}
    proc = subprocess.run(
        [sys.executable, "-m", "orch.cli.main", "secret", "set", "NAME"],
        env=environ,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.close(0),  # `<&-`
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "No value given, and standard input is closed." in proc.stderr
    assert "--value" in proc.stderr and "terminal" not in proc.stderr
