"""A create cut short leaves no sandbox open, whichever step it was cut at (docs/sandboxes.md
"Creating one", docs/cli.md): the server undoes it when it sees its caller gone, and `orch sandbox
create`, which chose the sandbox's id, removes it by that id when Ctrl-C came after the server
had made it (its answer sent as the connection closed, or read but not yet printed)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import httpx
import pytest

from orch.cli import client as client_mod
from orch.cli import sandbox as sandbox_cli
from orch.errors import ClientGone
from orch.models import new_id
from orch.sandbox.held_fake import FakeHolder
from orch.services import sandboxes
from orch.services.platform import Platform
from tests.api.test_sandboxes import cli, create, error, holder, rows

__all__ = ["cli", "holder"]


def _nothing_open(platform: Platform, holder: FakeHolder) -> None:
    assert [r.status for r in rows(platform) if r.status in sandboxes.OPEN] == []
    assert all(s.removed for s in holder.sandboxes.values())
    assert platform.held.ids() == [] and platform.run_memory.used == 0


@pytest.mark.parametrize("step", ["before it is stored", "while it starts"])
def test_a_caller_gone_at_each_step_leaves_nothing_open(
    holder: FakeHolder, platform: Platform, workspace: tuple[str, str], step: str
) -> None:
    holder.hold = threading.Event()
    gone = threading.Event()
    if step == "before it is stored":
        gone.set()
    failed: list[BaseException] = []

    def create_it() -> None:
        try:
            sandboxes.create(platform, workspace[0], gone=gone.is_set)
        except ClientGone as e:
            failed.append(e)

    creating = threading.Thread(target=create_it)
    creating.start()
    if step == "while it starts":
        assert holder.holding.wait(10), "the start never began"
        gone.set()
    holder.hold.set()
    creating.join(10)
    assert not creating.is_alive() and len(failed) == 1
    _nothing_open(platform, holder)


def test_a_chosen_id_is_the_sandbox_s_and_is_checked(api: httpx.Client, holder: FakeHolder) -> None:
    chosen = new_id("sbx")
    assert create(api, id=chosen)["id"] == chosen
    assert error(api.post("/v1/sandboxes", json={"id": chosen}), 409) == (
        f"A sandbox with the id {chosen} exists already."
    )
    said = error(api.post("/v1/sandboxes", json={"id": "sbx_../../etc"}), 400)
    assert said == "The id 'sbx_../../etc' is not a sandbox id as the server makes them."
    said = error(api.post("/v1/sandboxes", json={"id": "sbx_0123456789ab"}), 400)  # too long
    assert said == "The id 'sbx_0123456789ab' is not a sandbox id as the server makes them."
    assert len(holder.opened) == 1


def test_a_removal_by_its_chosen_id_while_it_starts_removes_it(
    api: httpx.Client, holder: FakeHolder, platform: Platform, workspace: tuple[str, str]
) -> None:
    """What `orch sandbox create` does after Ctrl-C, when the server is still starting it."""
    holder.hold = threading.Event()
    chosen = new_id("sbx")
    made: list[Any] = []
    creating = threading.Thread(
        target=lambda: made.append(sandboxes.create(platform, workspace[0], sandbox_id=chosen))
    )
    creating.start()
    assert holder.holding.wait(10), "the start never began"
    assert api.delete(f"/v1/sandboxes/{chosen}").status_code == 204
    holder.hold.set()
    creating.join(10)
    assert made[0].status == "removed"
    _nothing_open(platform, holder)


@pytest.mark.parametrize("when", ["before it is sent", "as its answer comes", "once its answer was read"])
def test_cli_create_interrupted_at_each_point_leaves_nothing_open(
    cli: Any, monkeypatch: pytest.MonkeyPatch, holder: FakeHolder, platform: Platform, when: str
) -> None:
    """Found by a tester: Ctrl-C 0.35 s into `orch sandbox create` said the server removes the
    sandbox, and 1 in 4 times it stayed running (its answer was on its way as the connection
    closed); at 0.45 s the Ctrl-C was swallowed (read, not printed) and the id printed, exit 0."""
    post = client_mod.Client.post
    on_sigint = sandbox_cli._on_sigint

    def interrupted(self: client_mod.Client, *args: Any, **kwargs: Any) -> Any:
        if when == "before it is sent":
            raise KeyboardInterrupt
        answer = post(self, *args, **kwargs)
        if when == "as its answer comes":
            raise KeyboardInterrupt  # the server made it and answered; the CLI never read it
        return answer

    def sigint_after_the_answer(handler: Any) -> None:
        if handler is signal.SIG_IGN and when == "once its answer was read" and not made:
            made.append(True)
            raise KeyboardInterrupt  # Ctrl-C as the answer is in, before the id is printed
        on_sigint(handler)

    made: list[bool] = []
    monkeypatch.setattr(client_mod.Client, "post", interrupted)
    monkeypatch.setattr(sandbox_cli, "_on_sigint", sigint_after_the_answer)
    res = cli("sandbox", "create")
    assert res.exit_code == 130 and res.stdout == "" and "Traceback" not in res.output
    _nothing_open(platform, holder)
    if when == "before it is sent":
        assert rows(platform) == []
        assert "Interrupted: the create was cancelled; no sandbox was left." in res.stderr
    else:
        (row,) = rows(platform)
        assert (row.status, row.reason) == ("removed", "removed on request")
        said = f"Interrupted: the create was cancelled; the sandbox it was making ({row.id}) was removed."
        assert said in res.stderr


def test_cli_create_interrupted_while_the_server_starts_it(
    cli: Any, monkeypatch: pytest.MonkeyPatch, holder: FakeHolder, platform: Platform
) -> None:
    """Ctrl-C while the create is in flight: the CLI removes the sandbox by the id it chose, which
    the server, still starting it, removes as it started (the in-process transport closes no
    connection: the server's own look for its caller is not what removes it here)."""
    holder.hold = threading.Event()
    post = client_mod.Client.post
    answers: list[Any] = []

    def interrupted(self: client_mod.Client, *args: Any, **kwargs: Any) -> Any:
        request = threading.Thread(target=lambda: answers.append(post(self, *args, **kwargs)))
        request.start()
        assert holder.holding.wait(10), "the start never began"
        request_and_release.append(request)
        raise KeyboardInterrupt

    request_and_release: list[threading.Thread] = []
    monkeypatch.setattr(client_mod.Client, "post", interrupted)
    res = cli("sandbox", "create")
    holder.hold.set()
    request_and_release[0].join(10)
    assert res.exit_code == 130 and res.stdout == ""
    assert answers[0]["status"] == "removed"
    (row,) = rows(platform)
    assert row.status == "removed" and f"({row.id}) was removed." in res.stderr
    _nothing_open(platform, holder)
