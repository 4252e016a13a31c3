"""`provider: openai`: Chat Completions through the `openai` SDK (OpenAI, and the servers that
speak it: vLLM, Ollama, llama.cpp's server, LiteLLM). Tools are functions; their results are
`tool` messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from orch.loop.client import RunClient
from orch.loop.model import (
    MISSING,
    Message,
    Request,
    Results,
    Shape,
    ToolCall,
    Turn,
    Unusable,
    UserText,
    sdk_errors,
    tokens,
    tool_call,
    usable,
    usage_sent,
)

_SHAPE = Shape("a chat completion")
NO_KEY = "none"  # sent when the loop names no key: a local server wants none, the SDK wants one


class OpenAIChat:
    def __init__(self, model: str, base_url: str, api_key: str | None) -> None:
        self.model, self.base_url = model, base_url
        # Retries are ours (loop/retry.py), so both providers retry alike.
        self.client = openai.OpenAI(
            api_key=api_key or NO_KEY, base_url=base_url, max_retries=0, http_client=RunClient()
        )
        # The SDK fills these from the server's own environment (OPENAI_ORG_ID, ...): not ours to send.
        self.client.organization = self.client.project = None

    def close(self) -> None:
        self.client.close()  # and its http_client: a call still in flight ends (client.py)

    def complete(self, request: Request) -> Turn:
        messages: list[Any] = [{"role": "system", "content": request.system}] if request.system else []
        for message in request.messages:
            messages += _wire(message)
        tools: Any = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in request.tools
        ]
        with sdk_errors(openai.APIStatusError, openai.APIConnectionError, "a chat completion"):
            answer = self.client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=messages,
                tools=tools or openai.omit,
                timeout=request.timeout,
            )
            return _turn(answer.parse(), usage_sent(answer.http_response))


def _turn(answer: ChatCompletion, usage: Mapping[str, object]) -> Turn:
    """The turn in an answer, each field read checked (model.Shape), its token counts as `usage`
    (the answer's as sent: model.usage_sent) has them. Arguments given as an object rather than
    its JSON text, as some compatible servers send them (llama.cpp's server has), are taken as
    that object's JSON (docs/loop.md, "What the model answers")."""
    if not isinstance(answer, BaseModel):  # the SDK's answer to a body that is no JSON object
        raise Unusable("the answer is not a chat completion")
    given = _SHAPE.field(answer, "choices")
    choices = _SHAPE.array(given, "choices")
    if not choices:
        if given is None or given is MISSING:
            raise _SHAPE.off("choices", given, "an array")
        raise Unusable("the answer is not a chat completion: choices is empty")
    choice = _SHAPE.an_object(choices[0], "choices[0]")
    said_back = _SHAPE.an_object(_SHAPE.field(choice, "message"), "choices[0].message")
    text = _SHAPE.text(_SHAPE.field(said_back, "content"), "choices[0].message.content")
    listed = _SHAPE.array(_SHAPE.field(said_back, "tool_calls"), "choices[0].message.tool_calls")
    return Turn(
        text=usable(text or ""),
        calls=tuple(_call(i, call) for i, call in enumerate(listed)),
        input_tokens=tokens(usage.get("prompt_tokens")),
        output_tokens=tokens(usage.get("completion_tokens")),
    )


def _call(i: int, given: object) -> ToolCall:
    at = f"choices[0].message.tool_calls[{i}]"
    call = _SHAPE.an_object(given, at)
    kind = _SHAPE.field(call, "type")
    if isinstance(kind, str) and kind != "function":  # a custom tool, which orch never offers
        named = str(getattr(_SHAPE.field(call, "custom"), "name", "") or "no name")
        raise Unusable("the answer calls a {} tool ({}), which orch never offers", kind, named)
    if kind != "function":
        raise _SHAPE.off(f"{at}.type", kind, '"function"')
    call_id = _SHAPE.text(_SHAPE.field(call, "id"), f"{at}.id")
    function = _SHAPE.an_object(_SHAPE.field(call, "function"), f"{at}.function")
    name = _SHAPE.field(function, "name")
    if not isinstance(name, str):
        raise _SHAPE.off(f"{at}.function.name", name, "a string")
    given = _SHAPE.field(function, "arguments")
    if isinstance(given, dict):  # an object rather than its JSON text: taken as it
        given = json.dumps(given, ensure_ascii=False)
    arguments = _SHAPE.text(given, f"{at}.function.arguments", "a JSON string")
    return tool_call(call_id or f"call_{i}", name, arguments or "{}")


def _wire(message: Message) -> list[dict[str, Any]]:
    if isinstance(message, UserText):
        return [{"role": "user", "content": message.text}]
    if isinstance(message, Results):
        return [{"role": "tool", "tool_call_id": r.call.id, "content": r.output} for r in message.results]
    said_back: dict[str, Any] = {"role": "assistant", "content": message.text or None}
    if message.calls:
        said_back["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.calls
        ]
    return [said_back]
