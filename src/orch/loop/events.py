"""A loop's events as they are stored (docs/loop.md, "Events"): every field the model or a tool
wrote is masked (the run's secrets become `***`: texts, tool names and call ids, the arguments'
keys and values) and bounded, so that a model writing megabytes cannot make a row of
`run_events` as large:

    TEXT_LIMIT      a model's text beside its tool calls, and a tool call's arguments (as JSON)
    NAME_LIMIT      a tool call's name and id
    answer_limit    the answer (`final`), cut as the run's stdout is, so the two are the same
    tool outputs    within the loop's tool_output_limit already (clip.py)

A cut field keeps its head and tail with `[... N bytes cut ...]` between; the answer keeps its
head, as stdout does, and says `truncated`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from orch.loop.clip import clip, head
from orch.loop.model import ToolCall, Turn, json_value
from orch.secret.mask import Mask

Emit = Callable[[str, dict[str, Any]], None]
TEXT_LIMIT = 64 * 1024  # bytes
NAME_LIMIT = 256  # bytes


def bounded(text: str, limit: int) -> str:
    """`text`, or its head and tail within `limit` bytes with the cut marked."""
    data = text.encode()
    return text if len(data) <= limit else clip(data, limit)


class Events:
    """What the loop hands to `emit`, masked with `mask` and bounded."""

    def __init__(self, emit: Emit, mask: Mask, answer_limit: int) -> None:
        self.emit, self.mask, self.answer_limit = emit, mask, answer_limit

    def _text(self, text: str, limit: int = TEXT_LIMIT) -> str:
        return bounded(self.mask(text), limit)

    def model_call(self, number: int, turn: Turn, duration: float, attempts: int, refused: int) -> None:
        event: dict[str, Any] = {
            "turn": number,
            "input_tokens": turn.input_tokens,
            "output_tokens": turn.output_tokens,
            "duration": round(duration, 3),
            "attempts": attempts,
        }
        if turn.text and turn.calls:  # a final answer's text is the `final` event's
            event["text"] = self._text(turn.text)
        if refused:
            event["refused_calls"] = refused
        self.emit("model_call", event)

    def tool_call(self, call: ToolCall) -> None:
        self.emit("tool_call", {**self._ids(call), "arguments": self._arguments(call.arguments)})

    def tool_result(self, call: ToolCall, exit_code: int, output: str, duration: float) -> None:
        # The output is masked and within tool_output_limit already (Tools.run).
        event = {**self._ids(call), "exit_code": exit_code, "output": output, "duration": round(duration, 3)}
        self.emit("tool_result", event)

    def final(self, text: str) -> tuple[str, bool]:
        """Emit the answer; return it as stored (the run's stdout) and whether it was cut."""
        data = self.mask(text).encode()
        truncated = len(data) > self.answer_limit
        # The head, as stdout keeps it: off a `***` it would split, on a character's start.
        answer = head(data, self.answer_limit).decode("utf-8", "ignore")
        self.emit("final", {"text": answer, "truncated": True} if truncated else {"text": answer})
        return answer, truncated

    def _ids(self, call: ToolCall) -> dict[str, str]:
        return {"call_id": self._text(call.id, NAME_LIMIT), "name": self._text(call.name, NAME_LIMIT)}

    def _arguments(self, text: str) -> object:
        """The object the model gave, masked; its text when it is not JSON, or when its JSON is
        over TEXT_LIMIT (then cut)."""
        try:
            value = _masked(json_value(text), self.mask)
        except ValueError:
            return self._text(text)
        dumped = json.dumps(value, ensure_ascii=False)
        return value if len(dumped.encode()) <= TEXT_LIMIT else bounded(dumped, TEXT_LIMIT)


def _masked(value: object, mask: Mask) -> object:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask(str(k)): _masked(v, mask) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    return value
