"""`provider: anthropic`: the Messages API through the `anthropic` SDK. Tool calls are
`tool_use` blocks of the assistant's message; their results, `tool_result` blocks of the next
user message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic.types import Message as AnthropicMessage
from pydantic import BaseModel

from orch.loop.client import RunClient
from orch.loop.model import (
    MISSING,
    Message,
    Request,
    Results,
    Shape,
    Turn,
    Unusable,
    UserText,
    sdk_errors,
    tokens,
    tool_call,
    usable,
    usage_sent,
)

_SHAPE = Shape("a Messages API message")
NO_KEY = "none"  # sent when the loop names no key; an explicit key also keeps the SDK from
# looking for credentials of its own (environment variables, profiles) on the server


class AnthropicMessages:
    def __init__(self, model: str, base_url: str, api_key: str | None) -> None:
        self.model, self.base_url = model, base_url
        self.client = anthropic.Anthropic(
            api_key=api_key or NO_KEY, base_url=base_url, max_retries=0, http_client=RunClient()
        )

    def close(self) -> None:
        self.client.close()  # and its http_client: a call still in flight ends (client.py)

    def complete(self, request: Request) -> Turn:
        tools: Any = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        messages: Any = [_wire(m) for m in request.messages]
        with sdk_errors(anthropic.APIStatusError, anthropic.APIConnectionError, "a Messages API message"):
            answer = self.client.messages.with_raw_response.create(
                model=self.model,
                max_tokens=request.max_output_tokens,
                system=request.system or anthropic.omit,
                messages=messages,
                tools=tools or anthropic.omit,
                timeout=request.timeout,
            )
            return _turn(answer.parse(), usage_sent(answer.http_response))


def _turn(answer: AnthropicMessage, usage: Mapping[str, object]) -> Turn:
    """The turn in an answer, each field read checked (model.Shape), its token counts as `usage`
    (the answer's as sent: model.usage_sent) has them; a block of another type (`thinking`,
    ...) is no text and no call. The answer is a message (`type` "message") with its `content`
    (an array, empty or not): else it is none, however it came (`{}`, `null`, a text page), and
    the run fails rather than take it for an empty answer."""
    if not isinstance(answer, BaseModel):  # the SDK's answer to a body that is no JSON object
        raise Unusable("the answer is not a Messages API message")
    kind = _SHAPE.field(answer, "type")
    if isinstance(kind, str) and kind != "message":  # an error object, say, sent as a 200
        raise Unusable('the answer is not a Messages API message: type is {}, not "message"', f'"{kind}"')
    if kind != "message":
        raise _SHAPE.off("type", kind, '"message"')
    content = _SHAPE.field(answer, "content")
    if content is None or content is MISSING:
        raise _SHAPE.off("content", content, "an array")
    texts, calls = [], []
    for i, given in enumerate(_SHAPE.array(content, "content")):
        block = _SHAPE.an_object(given, f"content[{i}]")
        kind = _SHAPE.field(block, "type")
        if not isinstance(kind, str):
            raise _SHAPE.off(f"content[{i}].type", kind, "a string")
        if kind == "text":
            texts.append(_SHAPE.text(_SHAPE.field(block, "text"), f"content[{i}].text") or "")
        elif kind == "tool_use":
            call_id, name = (_SHAPE.field(block, key) for key in ("id", "name"))
            if not isinstance(call_id, str):
                raise _SHAPE.off(f"content[{i}].id", call_id, "a string")
            if not isinstance(name, str):
                raise _SHAPE.off(f"content[{i}].name", name, "a string")
            calls.append(tool_call(call_id, name, json.dumps(getattr(block, "input", None))))
    cached = tokens(usage.get("cache_creation_input_tokens")) + tokens(usage.get("cache_read_input_tokens"))
    return Turn(
        text=usable("".join(texts)),
        calls=tuple(calls),
        input_tokens=tokens(tokens(usage.get("input_tokens")) + cached),
        output_tokens=tokens(usage.get("output_tokens")),
    )


def _wire(message: Message) -> dict[str, Any]:
    if isinstance(message, UserText):
        return {"role": "user", "content": message.text}
    if isinstance(message, Results):
        return {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": r.call.id, "content": r.output, "is_error": r.is_error}
                for r in message.results
            ],
        }
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.text}] if message.text else []
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": json.loads(c.arguments)}
        for c in message.calls
    ]
    return {"role": "assistant", "content": blocks}
