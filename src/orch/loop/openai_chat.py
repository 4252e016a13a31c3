"""`provider: openai`: Chat Completions through the `openai` SDK (OpenAI, and the servers that
speak it: vLLM, Ollama, llama.cpp's server, LiteLLM). Tools are functions; their results are
`tool` messages."""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletion

from orch.loop.client import RunClient
from orch.loop.model import (
    Message,
    Request,
    Results,
    Turn,
    Unusable,
    UserText,
    sdk_errors,
    tokens,
    tool_call,
    usable,
)

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
            answer = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                tools=tools or openai.omit,
                timeout=request.timeout,
            )
            return _turn(answer)


def _turn(answer: ChatCompletion) -> Turn:
    said_back = answer.choices[0].message
    calls = []
    for i, call in enumerate(said_back.tool_calls or ()):
        if call.type != "function":  # a custom tool, which orch never offers: not a call it can answer
            name = usable(str(getattr(getattr(call, "custom", None), "name", "") or "no name"))
            raise Unusable(f"the answer calls a {call.type} tool ({name}), which orch never offers")
        calls.append(tool_call(call.id or f"call_{i}", call.function.name, call.function.arguments or "{}"))
    usage = answer.usage
    return Turn(
        text=usable(said_back.content or ""),
        calls=tuple(calls),
        input_tokens=tokens(usage.prompt_tokens) if usage else 0,
        output_tokens=tokens(usage.completion_tokens) if usage else 0,
    )


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
