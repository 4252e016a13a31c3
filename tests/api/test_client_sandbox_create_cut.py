"""`client.sandboxes.create` cut short before its answer was read (Ctrl-C, a connection broken
or timed out) leaves no sandbox open: the client chose the sandbox's id and sent it, and removes
the sandbox by that id before the exception goes on (docs/client.md, Sandboxes), as `orch
sandbox create` does (tests/api/test_sandbox_create_interrupts.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from orch import Client
from orch.errors import ServerUnreachable
from orch.sandbox.held_fake import FakeHolder
from orch.services import sandboxes
from orch.services.platform import Platform
from tests.api.test_sandboxes import holder, rows
from tests.asgi import in_process

__all__ = ["holder"]


class CutAfterCreate(httpx.BaseTransport):
    """The in-process app, whose answer to a create (POST `create`: a sandbox's) is dropped once
    the server made it: `cut` is raised in its place (the answer on its way as Ctrl-C came, or as
    the connection broke or timed out). The requests it passed on are in `seen`."""

    create = "/v1/sandboxes"

    def __init__(self, inner: httpx.BaseTransport, cut: BaseException | None) -> None:
        self.inner, self.cut = inner, cut
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.inner.handle_request(request)
        self.seen.append((request.method, request.url.path))
        if self.cut is not None and request.method == "POST" and request.url.path == self.create:
            answer.close()
            raise self.cut
        return answer


@pytest.fixture
def app_transport(app: FastAPI) -> Iterator[httpx.BaseTransport]:
    with in_process(app) as transport:
        yield transport


class NeverConnected(httpx.BaseTransport):
    """A transport whose every request fails to connect with `refused`: nothing reaches the
    server. The requests tried are in `seen`."""

    def __init__(self, refused: Exception) -> None:
        self.refused = refused
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        raise self.refused


def _client(workspace: tuple[str, str], transport: httpx.BaseTransport) -> Client:
    return Client("http://testserver", workspace[1], transport=transport)


def _open(platform: Platform) -> list[str]:
    return [r.id for r in rows(platform) if r.status in sandboxes.OPEN]


# How a create is cut short after the server made it (for CutAfterCreate), run and sandbox alike.
cut_short = pytest.mark.parametrize(
    "cut",
    [  # made anew for each test: a note added to one would stay on it
        KeyboardInterrupt,
        lambda: httpx.ReadTimeout("timed out"),
        lambda: httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ],
    ids=["ctrl-c", "timed out", "connection broken"],
)


@cut_short
def test_a_create_cut_after_the_server_made_it_leaves_nothing_open(
    app_transport: httpx.BaseTransport,
    workspace: tuple[str, str],
    platform: Platform,
    holder: FakeHolder,
    cut: Callable[[], BaseException],
) -> None:
    transport = CutAfterCreate(app_transport, cut())
    with _client(workspace, transport) as client:
        expected = KeyboardInterrupt if cut is KeyboardInterrupt else ServerUnreachable
        with pytest.raises(expected) as raised:
            client.sandboxes.create()
    (row,) = rows(platform)  # the server made it, with the id the client chose and sent
    assert sandboxes.CHOSEN_ID.match(row.id)
    assert transport.seen == [("POST", "/v1/sandboxes"), ("DELETE", f"/v1/sandboxes/{row.id}")]
    assert (row.status, row.reason) == ("removed", "removed on request")
    assert _open(platform) == [] and all(s.removed for s in holder.sandboxes.values())
    notes = getattr(raised.value, "__notes__", [])
    assert notes == [f"The create was cancelled; the sandbox it was making ({row.id}) was removed."]


def test_a_create_that_answered_keeps_its_sandbox_with_the_chosen_id(
    app_transport: httpx.BaseTransport, workspace: tuple[str, str], platform: Platform, holder: FakeHolder
) -> None:
    transport = CutAfterCreate(app_transport, None)
    with _client(workspace, transport) as client:
        box = client.sandboxes.create()
    assert sandboxes.CHOSEN_ID.match(box.id) and _open(platform) == [box.id]
    assert transport.seen == [("POST", "/v1/sandboxes")]


def test_a_removal_that_fails_too_is_a_note_naming_the_id(
    app_transport: httpx.BaseTransport, workspace: tuple[str, str], platform: Platform, holder: FakeHolder
) -> None:
    """The server went with the answer: the removal can't be sent either, and the caller is told
    which id to remove once it is back."""

    class Gone(CutAfterCreate):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "DELETE":
                self.seen.append((request.method, request.url.path))
                raise httpx.ConnectError("Connection refused")
            return super().handle_request(request)

    transport = Gone(app_transport, httpx.ReadTimeout("timed out"))
    with _client(workspace, transport) as client, pytest.raises(ServerUnreachable) as raised:
        client.sandboxes.create()
    (row,) = rows(platform)
    assert _open(platform) == [row.id] and len(transport.seen) == 2
    (note,) = raised.value.__notes__
    assert note.startswith(
        f"The create was cut short, and the sandbox it may have made ({row.id}) could not be removed: "
        "Cannot reach the orch server"
    )
    assert f"client.sandboxes.get('{row.id}').remove()" in note


@pytest.mark.parametrize(
    "refused", [httpx.ConnectError("Connection refused"), httpx.ConnectTimeout("timed out")]
)
def test_a_create_that_never_reached_the_server_sends_nothing_more(
    workspace: tuple[str, str], platform: Platform, refused: Exception
) -> None:
    """No connection was made: nothing was started, so no removal is tried (it would wait on the
    same unreachable server for CANCEL_TIMEOUT, and note a failure to undo what never was)."""
    transport = NeverConnected(refused)
    with _client(workspace, transport) as client, pytest.raises(ServerUnreachable) as raised:
        client.sandboxes.create()
    assert transport.seen == [("POST", "/v1/sandboxes")] and rows(platform) == []
    assert raised.value.never_sent and not getattr(raised.value, "__notes__", [])
