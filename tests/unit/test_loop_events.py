"""What a loop's events store (loop/events.py): every field the model wrote masked — tool names,
call ids and the arguments' keys too — and bounded; the answer cut as the run's stdout is."""

from __future__ import annotations

import json
from typing import Any

from orch.loop.events import NAME_LIMIT, TEXT_LIMIT, Events
from orch.loop.model import ToolCall, Turn
from orch.secret.mask import Mask

SECRET = "sk-live-0123456789"


class Recorded:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))


def events(answer_limit: int = 1024 * 1024) -> tuple[Events, Recorded]:
    recorded = Recorded()
    return Events(recorded, Mask([SECRET]), answer_limit), recorded


def test_tool_names_ids_and_argument_keys_are_masked() -> None:
    made, recorded = events()
    call = ToolCall(f"call_{SECRET}", SECRET, json.dumps({SECRET: [SECRET, {f"k{SECRET}": 1}]}))
    made.tool_call(call)
    made.tool_result(call, 2, "error", 0.1)
    stored = json.dumps(recorded.events)
    assert SECRET not in stored
    (_, tool_call), (_, result) = recorded.events
    assert (tool_call["call_id"], tool_call["name"]) == ("call_***", "***")
    assert tool_call["arguments"] == {"***": ["***", {"k***": 1}]}
    assert (result["call_id"], result["name"]) == ("call_***", "***")


def test_a_models_text_and_arguments_are_bounded_and_the_cut_marked() -> None:
    made, recorded = events()
    big = "x" * (2 * 1024 * 1024)
    made.model_call(1, Turn(text=big, calls=(ToolCall("c", "bash", "{}"),)), 0.5, 1, 0)
    made.tool_call(ToolCall("c" * 5000, "n" * 5000, json.dumps({"path": "a", "content": big})))
    made.tool_call(ToolCall("c", "bash", big))  # not JSON: its text
    (_, model_call), (_, long_args), (_, not_json) = recorded.events
    assert len(model_call["text"].encode()) < TEXT_LIMIT + 50 and "bytes cut ...]" in model_call["text"]
    arguments = long_args["arguments"]  # over the bound: its JSON text, cut
    assert isinstance(arguments, str) and arguments.startswith('{"path": "a", "content": "xxx')
    assert len(arguments.encode()) < TEXT_LIMIT + 50 and "bytes cut ...]" in arguments
    assert len(long_args["name"]) < NAME_LIMIT + 50 and len(long_args["call_id"]) < NAME_LIMIT + 50
    assert len(not_json["arguments"].encode()) < TEXT_LIMIT + 50
    assert len(json.dumps(recorded.events)) < 4 * TEXT_LIMIT


def test_the_answer_is_cut_as_stdout_is_and_says_so() -> None:
    made, recorded = events(answer_limit=1000)
    answer, truncated = made.final("é" * 600 + SECRET)  # 1200 bytes: cut within a character
    assert truncated and answer == "é" * 500
    assert recorded.events == [("final", {"text": answer, "truncated": True})]
    made, recorded = events(answer_limit=1000)
    assert made.final(f"the key is {SECRET}") == ("the key is ***", False)
    assert recorded.events == [("final", {"text": "the key is ***"})]


def test_calls_beyond_the_limit_are_counted_on_the_model_call() -> None:
    made, recorded = events()
    made.model_call(3, Turn(text="", calls=(ToolCall("c", "bash", "{}"),)), 0.25, 2, refused=7)
    assert recorded.events == [
        (
            "model_call",
            {
                "turn": 3,
                "input_tokens": 0,
                "output_tokens": 0,
                "duration": 0.25,
                "attempts": 2,
                "refused_calls": 7,
            },
        )
    ]
