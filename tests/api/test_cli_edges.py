"""The CLI at its edges, against the in-process API (or the app served on loopback): Ctrl-C of
`orch run --json`, huge timeouts, declined confirmations, and the sentences of bad options."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from orch.cli import client as client_mod
from orch.cli import run as run_cli
from orch.cli import utils as cli_utils
from orch.cli.main import app
from orch.models import RunStatus
from orch.services.platform import Platform
from orch.store.schema import RunRow, utcnow
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli_runs import cli as cli  # the CLI on the in-process API
from tests.api.test_cli_runs import runner


def test_ctrl_c_of_run_json_prints_the_run_as_cancelled(
    cli, api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A started run ends when its worker has stopped it: `--json` printed it as the cancel's
    answer had it, still `running`. A thread stands in for the worker: it starts the run, and
    ends it as cancelled once it is asked to."""
    assert publish(api, "sleeper", bundle(tmp_path, {"main.py": ""})).status_code == 201
    asked = threading.Event()

    def interrupted(client, run_id, wait=0):  # type: ignore[no-untyped-def]
        with platform.store.session() as s:
            s.execute(update(RunRow).where(RunRow.id == run_id).values(status="running", started_at=utcnow()))
        threading.Thread(target=worker, args=(run_id,), daemon=True).start()
        raise KeyboardInterrupt  # Ctrl-C while `orch run --json` waits for the end

    def worker(run_id: str) -> None:
        while not asked.is_set():
            with platform.store.session() as s:
                if s.execute(select(RunRow.cancel_requested).where(RunRow.id == run_id)).scalar_one():
                    s.execute(
                        update(RunRow)
                        .where(RunRow.id == run_id)
                        .values(
                            status=RunStatus.CANCELLED.value,
                            exit_code=137,
                            reason="cancelled while running",
                            finished_at=utcnow(),
                        )
                    )
                    asked.set()
            platform.notify_runs(run_id)
            asked.wait(0.02)

    monkeypatch.setattr(run_cli, "_collect", interrupted)
    res = cli("run", "sleeper", "--json")
    assert res.exit_code == 130, res.output
    printed = json.loads(res.stdout)
    assert (printed["status"], printed["exit_code"], printed["reason"]) == (
        "cancelled",
        137,
        "cancelled while running",
    )
    assert printed["finished_at"] and "Cancelled run_" in res.stderr


def test_a_huge_exec_timeout_is_the_server_s_to_refuse(
    served: tuple[str, str], workspace: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over plain sockets (as `orch` reaches a local server): a wait of 1e10 s was past what a
    socket's timeout holds, and ended in "orch failed unexpectedly (OverflowError ...)"."""

    made: list[client_mod.Client] = []

    def make() -> client_mod.Client:
        made.append(client_mod.Client(served[0], workspace[1]))
        return made[-1]

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    try:
        for timeout in ("1e10", "1e300", "-5"):
            res = runner.invoke(
                app, ["sandbox", "exec", "sbx_abcdefghij", "--timeout", timeout, "--", "true"]
            )
            assert res.exit_code == 2, res.output
            assert "unexpectedly" not in res.output
    finally:
        for client in made:
            client.close()


@pytest.mark.parametrize(
    ("answer", "prompt_end"),
    [("n\n", "[y/N]: "), ("\n", "[y/N]: "), ("", "[y/N]: \n")],  # no, Enter, Ctrl-D
)
def test_a_declined_delete_says_nothing_was_deleted(
    cli, api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: str, prompt_end: str
) -> None:
    assert publish(api, "keep", bundle(tmp_path, {"main.py": ""})).status_code == 201
    monkeypatch.setattr(cli_utils, "terminal_input", lambda: True)
    res = cli("agents", "delete", "keep", input=answer)
    assert res.exit_code == 1
    assert res.stdout.endswith(prompt_end) and res.stderr == "Nothing was deleted.\n"
    assert [a["name"] for a in api.get("/v1/agents").json()] == ["keep"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("run", "x", "--input", "@"), "--input @ names no file."),
        (("sandbox", "create", "--cpus", "1e400"), "it is infinite, or too large to hold (such as 1e400)"),
        (
            ("env", "logs", "python", "--build", "b" * 5000),
            "--build 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'… (5,000",
        ),
    ],
)
def test_bad_options_get_the_cli_s_own_sentence(cli, args: tuple[str, ...], said: str) -> None:
    res = cli(*args)
    assert res.exit_code == 2, res.output
    assert said in res.stderr and "query." not in res.stderr and len(res.stderr) < 500


def test_deploying_an_empty_directory_speaks_of_a_service(cli, tmp_path: Path) -> None:
    (tmp_path / "emptydir").mkdir()
    res = cli("service", "deploy", str(tmp_path / "emptydir"))
    assert res.exit_code == 2
    assert "has no files to publish" in res.stderr and "your service's code" in res.stderr
    assert "agent" not in res.stderr


def test_a_host_that_is_not_this_machine_s_is_said_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before, a host that does not resolve was told to stop what uses the port."""
    monkeypatch.setenv("ORCH_HOME", str(tmp_path))
    res = runner.invoke(app, ["server", "--host", "999.1.1.1", "--port", "0", "--services-port", "0"])
    assert res.exit_code == 2
    assert (
        "Cannot listen on 999.1.1.1" in res.stderr and "Pass --host an address of this machine" in res.stderr
    )
    assert "port" not in res.stderr.split("\n")[1].split("(")[0]
