"""A 200 whose body is no message of the provider's (`{}`, `null`, a text page, nothing) fails
the run as not the provider's shape: with `provider: anthropic` such answers made the run
succeed with an empty answer (found by a tester), where `provider: openai` failed them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.driver import run_loop
from orch.loop.outcome import Outcome
from orch.loop.providers import connect
from orch.models import RunStatus
from tests.unit.test_loop_driver import QUICK, LocalSandbox

NOT_USABLE = "the model endpoint's answer is not usable: the answer is not "
JSON = "application/json"


class Raw:
    """An endpoint on 127.0.0.1 that answers every request with `head` and `body` as they are
    (no content-length when `length` is false: the body ends where the connection closes; no
    content-type when `content_type` is empty)."""

    def __init__(self, content_type: str, body: bytes, length: bool = True, extra: bytes = b"") -> None:
        head = b"HTTP/1.1 200 OK\r\n" + extra
        if content_type:  # else none
            head += b"content-type: " + content_type.encode() + b"\r\n"
        if length:
            head += b"content-length: %d\r\n" % len(body)
        self.answer = head + b"connection: close\r\n\r\n" + body
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                got = b""
                while b"\r\n\r\n" not in got:
                    got += conn.recv(65536)
                head, _, body = got.partition(b"\r\n\r\n")
                length = int(
                    next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:"))[15:]
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                conn.sendall(self.answer)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Any]:
    servers: list[Raw] = []

    def run(provider: str, server: Raw) -> Outcome:
        servers.append(server)
        base = f"{server.url}/v1" if provider == "openai" else server.url
        loop = LoopConfig(model="m", provider=provider, base_url=base)  # type: ignore[arg-type]
        return run_loop(
            loop, connect(loop, "k"), LocalSandbox(tmp_path), "hi", lambda *_: None, backoff=QUICK
        )

    yield run
    for server in servers:
        server.close()


MESSAGE = "a Messages API message"


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        (JSON, b"{}", f"{MESSAGE}: type is missing"),
        (JSON, b"null", MESSAGE),
        ("text/plain", b"hello", MESSAGE),
        ("text/html", b"<html>502 Bad Gateway</html>", MESSAGE),
        (JSON, b"[]", MESSAGE),
        (JSON, b'"done"', MESSAGE),
        (JSON, b"", MESSAGE),
        (JSON, b'{"type": "error", "error": {"message": "x"}}', f'{MESSAGE}: type is "error", not "message"'),
        (JSON, b'{"type": 1}', f'{MESSAGE}: type is a number, not "message"'),
        (JSON, b'{"type": "message", "role": "assistant"}', f"{MESSAGE}: content is missing"),
        (JSON, b'{"type": "message", "content": null}', f"{MESSAGE}: content is null, not an array"),
    ],
)
def test_an_answer_that_is_no_messages_api_message_fails(
    drive: Any, content_type: str, body: bytes, said: str
) -> None:
    server = Raw(content_type, body)
    outcome = drive("anthropic", server)
    assert (outcome.status, outcome.answer, outcome.reason) == (RunStatus.FAILED, None, NOT_USABLE + said)
    assert server.requests == 1  # not tried again
    assert outcome.usage.model_calls == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("content_type", [JSON, "text/plain", ""])
@pytest.mark.parametrize("extra", [b"", b"x-long: " + b"a" * 70_000 + b"\r\n"])
def test_a_200_without_a_body_fails(drive: Any, provider: str, content_type: str, extra: bytes) -> None:
    # No body: the connection closes after the head (with a 70 KB header line, or not).
    outcome = drive(provider, Raw(content_type, b"", length=False, extra=extra))
    shape = MESSAGE if provider == "anthropic" else "a chat completion"
    assert (outcome.status, outcome.answer, outcome.reason) == (RunStatus.FAILED, None, NOT_USABLE + shape)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(JSON, b"null"), ("text/plain", b"hello"), (JSON, b'"done"')],
)
def test_chat_completions_fail_alike(drive: Any, content_type: str, body: bytes) -> None:
    outcome = drive("openai", Raw(content_type, body))
    assert (outcome.status, outcome.reason) == (RunStatus.FAILED, NOT_USABLE + "a chat completion")


def test_a_message_with_empty_content_is_an_empty_answer(drive: Any) -> None:
    body = b'{"type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 3}}'
    outcome = drive("anthropic", Raw(JSON, body))
    assert (outcome.status, outcome.answer, outcome.usage.input_tokens) == (RunStatus.SUCCEEDED, "", 3)
