"""What an endpoint or a model writes into a run's reason is bounded, and masked before it is
cut: a hostile answer's tool `type` or custom tool name (found by a tester: a 7 MB reason per
run), the bytes of a malformed HTTP answer that the connection's error quotes, and, as a
backstop, any reason at all. And token counts are read as the answer sent them: `true` or "12"
is not a number and counts 0 (the SDKs' models turned them into 1 and 12)."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.driver import run_loop
from orch.loop.model import Request, Turn
from orch.loop.outcome import Outcome, failed
from orch.loop.providers import connect
from orch.models import RunStatus
from orch.secret.mask import Mask
from tests.unit.test_loop_answer_shape import ANSWER, Canned, completion, message
from tests.unit.test_loop_driver import QUICK, LocalSandbox

KEY = "sk-FAKEKEY-1234567890abcdef"
NOT_USABLE = "the model endpoint's answer is not usable: "
BIG = 3 * 1024 * 1024  # characters of a hostile field: megabytes, where a reason holds hundreds


def looped(loop: LoopConfig, tmp_path: Path) -> Outcome:
    """The loop run once with the key as its only secret, on a local sandbox."""
    sandbox = LocalSandbox(tmp_path)
    return run_loop(loop, connect(loop, KEY), sandbox, "hi", lambda *_: None, mask=Mask([KEY]), backoff=QUICK)


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Any]:
    servers: list[Canned] = []

    def run(provider: str, *answers: dict[str, Any]) -> Outcome:
        server = Canned(*answers)
        servers.append(server)
        base = f"{server.url}/v1" if provider == "openai" else server.url
        loop = LoopConfig(model="m", provider=provider, base_url=base)  # type: ignore[arg-type]
        return looped(loop, tmp_path)

    yield run
    for server in servers:
        server.close()


def custom_call(kind: str, name: str) -> dict[str, Any]:
    call = {"id": "c", "type": kind, "custom": {"name": name, "input": "x"}}
    return completion({"content": None, "tool_calls": [call]})


def no_key_prefix(reason: str) -> bool:
    """Whether no 6 or more of the key's first characters are in `reason` (a cut through it),
    and no `***` is split (a run of 1 or 2 `*`)."""
    return KEY[:6] not in reason and re.search(r"(?<!\*)\*{1,2}(?!\*)", reason) is None


def test_a_huge_tool_type_is_quoted_bounded_and_masked(drive: Any) -> None:
    outcome = drive("openai", custom_call("z" * BIG + KEY + " tail", "apply_patch"))  # not "custom": no name
    assert outcome.status == RunStatus.FAILED
    assert outcome.reason is not None and len(outcome.reason) < 400
    assert outcome.reason.startswith(f"{NOT_USABLE}the answer calls a zzz")
    assert outcome.reason.endswith("... tool (no name), which orch never offers")
    assert no_key_prefix(outcome.reason)


@pytest.mark.parametrize("before", range(86, 100))  # the key across the quote's cut, everywhere
def test_a_custom_tools_name_is_masked_before_it_is_cut(drive: Any, before: int) -> None:
    outcome = drive("openai", custom_call("custom", "N" * before + KEY + "N" * BIG))
    reason = outcome.reason
    assert reason is not None and len(reason) < 400
    assert reason.startswith(f"{NOT_USABLE}the answer calls a custom tool (NNN")
    assert no_key_prefix(reason)  # the cut splits no `***`
    assert reason.endswith("...), which orch never offers")


def test_a_tool_type_with_a_lone_surrogate_can_be_stored(tmp_path: Path) -> None:
    server = Canned(custom_call("\ud800x", "y"))
    try:
        loop = LoopConfig(model="m", provider="openai", base_url=f"{server.url}/v1")  # type: ignore[arg-type]
        outcome = run_loop(loop, connect(loop, None), LocalSandbox(tmp_path), "hi", lambda *_: None)
    finally:
        server.close()
    assert outcome.reason == f"{NOT_USABLE}the answer calls a \ufffdx tool (no name), which orch never offers"


class Garbled:
    """An endpoint on 127.0.0.1 whose every answer has a header line of `line` (no `name: value`):
    the HTTP client's error quotes it."""

    def __init__(self, line: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.line = line
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.recv(1 << 20)
                conn.sendall(b"HTTP/1.1 200 OK\r\n" + self.line + b"\r\n\r\n")


def test_a_malformed_answer_quoted_by_the_connection_error_is_bounded(tmp_path: Path) -> None:
    server = Garbled(b"Q" * 60000 + KEY.encode() + b" tail")
    try:
        loop = LoopConfig(model="m", provider="openai", base_url=server.url)  # type: ignore[arg-type]
        outcome = looped(loop, tmp_path)
    finally:
        server.sock.close()
    reason = outcome.reason
    assert reason is not None and reason.startswith(f"could not reach the model endpoint {server.url} (")
    assert "illegal header line" in reason and len(reason) < 800
    assert reason.endswith("3 tries); check loop.base_url and that the server there is up")
    assert no_key_prefix(reason)


class Says:
    """A model that stops the loop with `reason`, as a part of it could if it quoted without bound."""

    base_url = "http://model.test"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def complete(self, request: Request) -> Turn:
        raise failed(self.reason)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("before", [1990, 1995, 1999])
def test_every_reason_is_bounded_masked_first(tmp_path: Path, before: int) -> None:
    loop = LoopConfig(model="m", provider="openai", base_url="http://model.test/v1")  # type: ignore[arg-type]
    model = Says("r" * before + KEY + "r" * BIG)
    outcome = run_loop(loop, model, LocalSandbox(tmp_path), "hi", lambda *_: None, mask=Mask([KEY]))
    assert outcome.reason is not None and len(outcome.reason) <= 2000
    assert outcome.reason.startswith("rrr") and outcome.reason.endswith("...")
    assert no_key_prefix(outcome.reason)


def tokens_of(drive: Any, provider: str, answer: dict[str, Any]) -> dict[str, int]:
    outcome = drive(provider, answer)
    assert outcome.status == RunStatus.SUCCEEDED, outcome.reason
    return outcome.usage.as_dict()


@pytest.mark.parametrize("count", [True, False, "12", [3], {"n": 3}, None])
def test_a_chat_completion_count_not_a_number_counts_0(drive: Any, count: object) -> None:
    answer = {**ANSWER, "usage": {"prompt_tokens": count, "completion_tokens": 5, "total_tokens": 6}}
    assert tokens_of(drive, "openai", answer) == {"input_tokens": 0, "output_tokens": 5, "model_calls": 1}
    answer = {**ANSWER, "usage": {"prompt_tokens": 5, "completion_tokens": count, "total_tokens": 6}}
    assert tokens_of(drive, "openai", answer) == {"input_tokens": 5, "output_tokens": 0, "model_calls": 1}


@pytest.mark.parametrize("usage", [None, 7, "lots", [1, 2]])
def test_a_chat_completion_usage_not_an_object_counts_0(drive: Any, usage: object) -> None:
    answer = {**ANSWER, "usage": usage}
    assert tokens_of(drive, "openai", answer) == {"input_tokens": 0, "output_tokens": 0, "model_calls": 1}


def final_message(**usage: object) -> dict[str, Any]:
    return {**message({"type": "text", "text": "done"}), "stop_reason": "end_turn", "usage": usage}


@pytest.mark.parametrize("count", [True, "12", [3]])
def test_a_messages_api_count_not_a_number_counts_0(drive: Any, count: object) -> None:
    for field in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        counts = {"input_tokens": 100, "output_tokens": 5, "cache_creation_input_tokens": 10}
        counts["cache_read_input_tokens"] = 1000
        answer = final_message(**{**counts, field: count})
        left = 1110 - counts[field]
        assert tokens_of(drive, "anthropic", answer) == {
            "input_tokens": left,
            "output_tokens": 5,
            "model_calls": 1,
        }
    answer = final_message(input_tokens=3, output_tokens=count)
    assert tokens_of(drive, "anthropic", answer) == {"input_tokens": 3, "output_tokens": 0, "model_calls": 1}


def test_counts_as_numbers_still_count(drive: Any) -> None:
    answer = {**ANSWER, "usage": {"prompt_tokens": 7, "completion_tokens": 2.0, "total_tokens": 9}}
    assert tokens_of(drive, "openai", answer) == {"input_tokens": 7, "output_tokens": 2, "model_calls": 1}
    answer = final_message(
        input_tokens=7, output_tokens=100, cache_creation_input_tokens=100, cache_read_input_tokens=1000
    )
    assert tokens_of(drive, "anthropic", answer) == {
        "input_tokens": 1107,
        "output_tokens": 100,
        "model_calls": 1,
    }
