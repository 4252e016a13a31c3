"""Found by a tester: Ctrl-C (or a connection broken or timed out) during the create of `orch run
AGENT` said `Interrupted.`, and the run the server had queued (its answer on its way as the
connection closed) went on, seen by nobody and never cancelled. `orch run` and
`client.runs.create` now choose the run's id and send it (`id`), and cancel the run by it when the
create was cut short before its answer was read (docs/cli.md, docs/client.md), as `orch sandbox
create` removes its sandbox (tests/api/test_sandbox_create_interrupts.py)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import Result

from orch import Client
from orch.client.transport import Transport
from orch.errors import ServerUnreachable
from orch.services import runs
from orch.services.platform import Platform
from orch.store.schema import RunRow
from tests.api import test_client_sandbox_create_cut as sandbox_cut
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_cli_pipe_and_interrupt import _ctrl_c
from tests.api.test_cli_runs import cli  # noqa: F401 - the fixture
from tests.api.test_client_sandbox_create_cut import app_transport as app_transport  # a fixture

LOST = ServerUnreachable(
    "The orch server at http://testserver did not answer in time (ReadTimeout).",
    "Check that it is running and not overloaded (`orch server`), then try again.",
)


@pytest.fixture
def agent(api: httpx.Client, tmp_path: Path) -> str:
    """An agent whose runs stay queued (no worker here)."""
    assert publish(api, "hog", bundle(tmp_path, {"main.py": ""})).status_code == 201
    return "hog"


def _runs(platform: Platform) -> list[tuple[str, str]]:
    with platform.store.session() as s:
        return [(r.id, r.status) for r in s.execute(select(RunRow.id, RunRow.status))]


def _cut_create(monkeypatch: pytest.MonkeyPatch, when: str, cut: Callable[[], None] = _ctrl_c) -> list[str]:
    """Cut `orch run`'s create short `when` ("before it is sent", or "as its answer comes": the
    server queued the run and answered; the CLI never read it) with `cut` (a real SIGINT unless
    told). Returns the paths the CLI posted to."""
    real_post = Transport.post
    posted: list[str] = []

    def post(self: Transport, path: str, *args: Any, **kwargs: Any) -> Any:
        posted.append(path)
        if path != "/v1/runs":
            return real_post(self, path, *args, **kwargs)
        if when == "as its answer comes":
            real_post(self, path, *args, **kwargs)  # queued and answered: never read
        cut()
        raise AssertionError("the cut did not interrupt the create")

    monkeypatch.setattr(Transport, "post", post)
    return posted


@pytest.mark.parametrize("options", [[], ["--detach"], ["--detach", "--json"]])
def test_ctrl_c_as_the_create_s_answer_comes_cancels_the_run(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
    options: list[str],
) -> None:
    """--detach too: the caller never got the id, so the run is not theirs to keep."""
    posted = _cut_create(monkeypatch, "as its answer comes")
    res = cli("run", agent, *options)
    ((run_id, status),) = _runs(platform)
    assert res.exit_code == 130, res.output
    assert (status, posted) == ("cancelled", ["/v1/runs", f"/v1/runs/{run_id}/cancel"])
    assert f"Cancelled {run_id}." in res.stderr and "Interrupted" not in res.stderr
    assert res.stdout == "" and "Traceback" not in res.output


def test_ctrl_c_as_the_create_s_answer_comes_with_json_prints_the_cancelled_run(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
) -> None:
    """As Ctrl-C once the run exists (docs/cli.md): the cancelled run is printed."""
    _cut_create(monkeypatch, "as its answer comes")
    res = cli("run", agent, "--json")
    ((run_id, status),) = _runs(platform)
    assert res.exit_code == 130, res.output
    assert status == "cancelled" and f"Cancelled {run_id}." in res.stderr
    printed = json.loads(res.stdout)
    assert (printed["id"], printed["status"]) == (run_id, "cancelled")


@pytest.mark.parametrize("options", [[], ["--json"], ["--detach"]])
def test_ctrl_c_before_the_create_was_sent_says_interrupted(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
    options: list[str],
) -> None:
    """The cancel by the chosen id finds no run (404): nothing more than `Interrupted.`."""
    posted = _cut_create(monkeypatch, "before it is sent")
    res = cli("run", agent, *options)
    assert res.exit_code == 130, res.output
    assert _runs(platform) == []
    (cancel,) = posted[1:]
    assert runs.CHOSEN_ID.match(cancel.split("/")[3])
    assert res.stderr == "Interrupted.\n" and res.stdout == ""


def test_ctrl_c_whose_cancel_fails_names_the_run(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
    sigint: None,
) -> None:
    _cut_create(monkeypatch, "as its answer comes")
    cut_post = Transport.post

    def post(self: Transport, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith("/cancel"):
            raise LOST
        return cut_post(self, path, *args, **kwargs)

    monkeypatch.setattr(Transport, "post", post)
    res = cli("run", agent)
    ((run_id, status),) = _runs(platform)
    assert res.exit_code == 130, res.output
    assert status == "queued"
    assert (
        f"Interrupted, but the run the create may have queued ({run_id}) could not be cancelled" in res.stderr
    )
    assert f"`orch runs cancel {run_id}`" in res.stderr


def _lost() -> None:
    raise LOST


def test_a_create_whose_answer_was_lost_cancels_the_run(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection broke or timed out as the answer came: the error is said, then the run
    the server queued is cancelled by the id the CLI chose."""
    posted = _cut_create(monkeypatch, "as its answer comes", _lost)
    res = cli("run", agent)
    ((run_id, status),) = _runs(platform)
    assert res.exit_code == 1, res.output
    assert (status, posted) == ("cancelled", ["/v1/runs", f"/v1/runs/{run_id}/cancel"])
    assert res.stderr.startswith(f"✗ {LOST.message}\n  {LOST.fix}\n")
    assert res.stderr.endswith(f"  Cancelled {run_id}, the run it had queued.\n")


def test_a_create_that_could_not_connect_cancels_nothing(
    cli: Callable[..., Result],  # noqa: F811 - the fixture
    agent: str,
    platform: Platform,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No server to reach (the commonest case): the request never left, so nothing is cancelled
    and the error is said as it always was."""
    with socket.socket() as closed:  # a port nothing listens on once it is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nowhere = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(Transport, "from_settings", staticmethod(lambda: Transport(nowhere, "t")))
    posted: list[str] = []
    real_post = Transport.post
    monkeypatch.setattr(
        Transport, "post", lambda self, path, *a, **k: posted.append(path) or real_post(self, path, *a, **k)
    )
    res = cli("run", agent)
    assert res.exit_code == 1, res.output
    assert posted == ["/v1/runs"] and _runs(platform) == []
    assert res.stderr.startswith(f"✗ Cannot reach the orch server at {nowhere} (ConnectError).")
    assert "run_" not in res.stderr


# ---- client.runs.create -----------------------------------------------------------------------


class CutAfterCreate(sandbox_cut.CutAfterCreate):
    """The in-process app, whose answer to a run's create is dropped once the server queued it:
    `cut` is raised in its place. The requests it passed on are in `seen`."""

    create = "/v1/runs"


@sandbox_cut.cut_short
def test_client_create_cut_after_the_server_queued_it_cancels_the_run(
    app_transport: httpx.BaseTransport,
    workspace: tuple[str, str],
    agent: str,
    platform: Platform,
    cut: Callable[[], BaseException],
) -> None:
    transport = CutAfterCreate(app_transport, cut())
    with Client("http://testserver", workspace[1], transport=transport) as client:
        expected = KeyboardInterrupt if cut is KeyboardInterrupt else ServerUnreachable
        with pytest.raises(expected) as raised:
            client.runs.create(agent)
    ((run_id, status),) = _runs(platform)  # queued with the id the client chose and sent
    assert runs.CHOSEN_ID.match(run_id)
    assert transport.seen == [("POST", "/v1/runs"), ("POST", f"/v1/runs/{run_id}/cancel")]
    assert status == "cancelled"
    notes = getattr(raised.value, "__notes__", [])
    assert notes == [f"The create was cancelled; the run it had queued ({run_id}) was cancelled."]


def test_client_create_cut_before_the_server_queued_it_leaves_nothing(
    app_transport: httpx.BaseTransport, workspace: tuple[str, str], agent: str, platform: Platform
) -> None:
    class CutBefore(CutAfterCreate):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/runs":
                self.seen.append((request.method, request.url.path))
                raise httpx.WriteError("Broken pipe")
            return super().handle_request(request)

    transport = CutBefore(app_transport, None)
    client = Client("http://testserver", workspace[1], transport=transport)
    with client, pytest.raises(ServerUnreachable) as raised:
        client.runs.create(agent)
    assert _runs(platform) == [] and len(transport.seen) == 2
    (note,) = raised.value.__notes__
    assert note.startswith("The create was cancelled; no run was left (its id would have been run_")


def test_client_create_that_answered_keeps_its_run_with_the_chosen_id(
    app_transport: httpx.BaseTransport, workspace: tuple[str, str], agent: str, platform: Platform
) -> None:
    transport = CutAfterCreate(app_transport, None)
    with Client("http://testserver", workspace[1], transport=transport) as client:
        run = client.runs.create(agent)
    assert runs.CHOSEN_ID.match(run.id) and _runs(platform) == [(run.id, "queued")]
    assert transport.seen == [("POST", "/v1/runs")]


def test_client_cancel_that_fails_too_is_a_note_naming_the_id(
    app_transport: httpx.BaseTransport, workspace: tuple[str, str], agent: str, platform: Platform
) -> None:
    class Gone(CutAfterCreate):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/cancel"):
                self.seen.append((request.method, request.url.path))
                raise httpx.ConnectError("Connection refused")
            return super().handle_request(request)

    transport = Gone(app_transport, httpx.ReadTimeout("timed out"))
    client = Client("http://testserver", workspace[1], transport=transport)
    with client, pytest.raises(ServerUnreachable) as raised:
        client.runs.create(agent)
    ((run_id, status),) = _runs(platform)
    assert status == "queued" and len(transport.seen) == 2
    (note,) = raised.value.__notes__
    assert note.startswith(
        f"The create was cut short, and the run it may have made ({run_id}) could not be cancelled: "
        "Cannot reach the orch server"
    )
    assert f"client.runs.get('{run_id}').cancel()" in note


def test_client_create_that_never_reached_the_server_sends_nothing_more(
    workspace: tuple[str, str], agent: str, platform: Platform
) -> None:
    """A refused connect: nothing was queued, so no cancel is tried (nor noted as failing)."""
    transport = sandbox_cut.NeverConnected(httpx.ConnectError("Connection refused"))
    client = Client("http://testserver", workspace[1], transport=transport)
    with client, pytest.raises(ServerUnreachable) as raised:
        client.runs.create(agent)
    assert transport.seen == [("POST", "/v1/runs")] and _runs(platform) == []
    assert raised.value.never_sent and not getattr(raised.value, "__notes__", [])
