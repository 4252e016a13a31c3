"""A request still in flight when a drain's time runs out (a restart, a redeploy, a stop: the
replica had DRAIN_SECONDS to finish it, then its container stops) hears that the platform stopped
the replica, and to try again (docs/services.md, "Restart, stop and delete"). Before, it heard
orch's `503 The service web did not answer (the connection was refused).`, a crash's words. A
stop or a delete does not tell it to try again: the service stays stopped (or gone)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import pytest

from orch.services import deployed as use_cases
from orch.services import routing
from orch.services.platform import Platform
from tests.api.test_services_proxy import deployed


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


RETRY = "Try again in a few seconds; see the service's status."
# Why the drain was, and what its cut request's caller is told to do: a stopped or deleted service
# does not answer a few seconds later (was "Try again in a few seconds" for them too).
DRAINS = {
    "restart": (routing.RESTARTING, "the service is restarting", RETRY),
    "redeploy": (routing.RESTARTING, "web v2 replaces it", RETRY),
    "stop": (
        routing.GOING_AWAY,
        "the service was stopped",
        "The service stays stopped until it is restarted (orch service restart web).",
    ),
    "delete": (
        routing.GOING_AWAY,
        "the service was deleted",
        "The service was deleted: it answers again once it is deployed again.",
    ),
}


@pytest.mark.parametrize(
    ("method", "drain"),
    [("GET", "restart"), ("POST", "restart"), ("GET", "redeploy"), ("GET", "stop"), ("POST", "delete")],
)
def test_a_request_cut_by_a_drain_s_end_says_why_and_what_to_do(
    api: httpx.Client,
    platform: Platform,
    tmp_path: Path,
    live: str,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    drain: str,
) -> None:
    code, reason, fix = DRAINS[drain]
    svc = deployed(api, platform, tmp_path, {"main.py": ""}, public="true")
    listener = socket.create_server(("127.0.0.1", 0))  # the replica: it takes the request, never answers
    monkeypatch.setattr(use_cases, "PORT", listener.getsockname()[1])
    got: list[httpx.Response] = []

    def call() -> None:
        body = b"x" if method == "POST" else None  # a GET is tried again, on a new connection: refused
        got.append(httpx.request(method, f"{live}/services/team/web/slow", content=body, timeout=10))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        listener.settimeout(10)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                head += chunk
            assert head.startswith(method.encode())
            # The drain's time runs out with the request in flight; then the container stops:
            # its process goes (nothing listens there any more) and its connections with it.
            routing.of(platform).drain([svc["container"]], code, reason, 0.2)
            listener.close()
    finally:
        listener.close()
        caller.join(10)
    [answer] = got
    assert answer.status_code == 503
    assert answer.json()["message"] == (
        "The service web did not answer: its replica was stopped with this request still in "
        f"flight ({reason})."
    )
    assert answer.json()["fix"] == fix
