"""Answers slightly off their provider's shape, as compatible servers send them: the run fails
naming the field and what it held (each failed as `the answer is not a chat completion`, saying
nothing of which field broke), and Chat Completions arguments given as an object rather than
their JSON text are taken as that object (llama.cpp's server has sent them so)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.driver import run_loop
from orch.loop.outcome import Outcome
from orch.loop.providers import connect
from orch.models import RunStatus
from tests.unit.test_loop_driver import QUICK, LocalSandbox

NOT_USABLE = "the model endpoint's answer is not usable: "


class Canned:
    """An endpoint on 127.0.0.1 that answers each POST with the next of `answers` as it is,
    recording the bodies it was sent."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers, self.sent = list(answers), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.sent.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                body = json.dumps(owner.answers.pop(0)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def completion(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


CALL = {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}}
ANSWER = completion({"content": "done"})


def with_call(**changes: Any) -> dict[str, Any]:
    """A completion calling bash, with `changes` to the call (`function__name`: the function's
    field; None: the field left out)."""
    call = copy.deepcopy(CALL)
    for key, value in changes.items():
        place, field = (call["function"], key[10:]) if key.startswith("function__") else (call, key)
        if value is None:
            del place[field]
        else:
            place[field] = value
    return completion({"content": None, "tool_calls": [call]})


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Any]:
    servers: list[Canned] = []

    def run(provider: str, *answers: dict[str, Any]) -> tuple[Outcome, Canned]:
        server = Canned(*answers)
        servers.append(server)
        base = f"{server.url}/v1" if provider == "openai" else server.url
        loop = LoopConfig(model="m", provider=provider, base_url=base)  # type: ignore[arg-type]
        outcome = run_loop(
            loop, connect(loop, "k"), LocalSandbox(tmp_path), "hi", lambda *_: None, backoff=QUICK
        )
        return outcome, server

    yield run
    for server in servers:
        server.close()


CALLS = "choices[0].message.tool_calls[0]"


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (with_call(id=7), f"{CALLS}.id is a number, not a string"),
        (with_call(function__name=None), f"{CALLS}.function.name is missing"),
        (with_call(function__name=["bash"]), f"{CALLS}.function.name is an array, not a string"),
        (with_call(function__arguments=3), f"{CALLS}.function.arguments is a number, not a JSON string"),
        (with_call(type=None), f"{CALLS}.type is missing"),
        (with_call(type=False), f'{CALLS}.type is true or false, not "function"'),
        (with_call(function=None), f"{CALLS}.function is missing"),
        (with_call(function="bash"), f"{CALLS}.function is a string, not an object"),
        (completion({"content": None, "tool_calls": ["bash"]}), f"{CALLS} is a string, not an object"),
        (
            completion({"content": None, "tool_calls": {"0": CALL}}),
            "choices[0].message.tool_calls is an object, not an array",
        ),
        (completion({"content": ["done"]}), "choices[0].message.content is an array, not a string"),
        ({**ANSWER, "choices": []}, "choices is empty"),
        ({**ANSWER, "choices": None}, "choices is null, not an array"),
        ({k: v for k, v in ANSWER.items() if k != "choices"}, "choices is missing"),
        ({**ANSWER, "choices": [{"index": 0}]}, "choices[0].message is missing"),
    ],
)
def test_a_chat_completion_off_its_shape_names_the_field(
    drive: Any, answer: dict[str, Any], said: str
) -> None:
    outcome, server = drive("openai", answer)
    assert (outcome.status, outcome.reason) == (
        RunStatus.FAILED,
        f"{NOT_USABLE}the answer is not a chat completion: {said}",
    )
    assert len(server.sent) == 1  # not tried again


def test_arguments_given_as_an_object_are_taken_as_it(drive: Any) -> None:
    outcome, server = drive("openai", with_call(function__arguments={"command": "echo hi"}), ANSWER)
    assert (outcome.status, outcome.answer) == (RunStatus.SUCCEEDED, "done")
    said_back, result = server.sent[1]["messages"][-2:]
    # Sent back as Chat Completions has them: their JSON text.
    assert said_back["tool_calls"][0]["function"]["arguments"] == '{"command": "echo hi"}'
    assert result == {"role": "tool", "tool_call_id": "call_1", "content": "hi\n"}


def test_a_call_without_an_id_is_given_one(drive: Any) -> None:
    outcome, server = drive("openai", with_call(id=None), ANSWER)
    assert outcome.status == RunStatus.SUCCEEDED
    assert server.sent[1]["messages"][-1]["tool_call_id"] == "call_0"


def message(*content: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": list(content),
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


USE = {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}}


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (message({"type": "text", "text": "a"}, {**USE, "id": 7}), "content[1].id is a number, not a string"),
        (message({k: v for k, v in USE.items() if k != "name"}), "content[0].name is missing"),
        (message({"text": "a"}), "content[0].type is missing"),
        (message({"type": "text", "text": 5}), "content[0].text is a number, not a string"),
        (message("a"), "content[0] is a string, not an object"),
        ({**message(), "content": "a"}, "content is a string, not an array"),
    ],
)
def test_a_messages_api_message_off_its_shape_names_the_field(
    drive: Any, answer: dict[str, Any], said: str
) -> None:
    outcome, _server = drive("anthropic", answer)
    assert (outcome.status, outcome.reason) == (
        RunStatus.FAILED,
        f"{NOT_USABLE}the answer is not a Messages API message: {said}",
    )
