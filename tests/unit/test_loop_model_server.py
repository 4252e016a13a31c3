"""The scripted model server (tests/model_server.py) checked with the providers' official SDKs:
what it answers is what they parse, its errors are the ones they raise, and it refuses the
malformed conversations the real endpoints refuse."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.model_server import KEY, Fail, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture

TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    }
]
TOOLS_ANTHROPIC = [
    {"name": "bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}
]


def oai(server: ModelServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_url, api_key=key, max_retries=0)


def ant(server: ModelServer, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.anthropic_url, api_key=key, max_retries=0)


def test_chat_completions_tool_call_then_answer(model_server: ModelServer) -> None:
    model_server.script(
        Reply(calls=[("bash", {"command": "ls"})], input_tokens=12, output_tokens=7), Reply(text="two files")
    )
    client = oai(model_server)
    first = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "list"}],
        tools=TOOLS_OPENAI,  # type: ignore[list-item]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "bash"
    assert json.loads(call.function.arguments) == {"command": "ls"}
    assert first.usage is not None and (first.usage.prompt_tokens, first.usage.completion_tokens) == (12, 7)
    second = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "user", "content": "list"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "a\nb\n"},
        ],
    )
    assert second.choices[0].message.content == "two files" and second.choices[0].finish_reason == "stop"
    assert model_server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert model_server.requests[1].body["messages"][2]["tool_call_id"] == call.id


def test_messages_tool_use_then_answer(model_server: ModelServer) -> None:
    model_server.script(
        Reply(text="Let me look.", calls=[("bash", {"command": "ls"})]), Reply(text="two files")
    )
    client = ant(model_server)
    first = client.messages.create(
        model="m",
        max_tokens=100,
        messages=[{"role": "user", "content": "list"}],
        tools=TOOLS_ANTHROPIC,  # type: ignore[list-item]
    )
    assert first.stop_reason == "tool_use"
    text, use = first.content
    assert text.type == "text" and text.text == "Let me look."
    assert use.type == "tool_use" and use.name == "bash" and use.input == {"command": "ls"}
    assert (first.usage.input_tokens, first.usage.output_tokens) == (10, 5)
    second = client.messages.create(
        model="m",
        max_tokens=100,
        messages=[
            {"role": "user", "content": "list"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},  # type: ignore[misc]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a\nb\n"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    assert second.content[0].text == "two files"
    headers = model_server.requests[0].headers
    assert KEY in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert "anthropic-version" in headers


def test_errors_are_the_sdks_own(model_server: ModelServer) -> None:
    model_server.script(
        Fail(429, "Rate limit reached for requests", {"retry-after": "1"}),
        Fail(500, "The server had an error"),
        Fail(529, "Overloaded"),
    )
    with pytest.raises(openai.RateLimitError) as rate:
        oai(model_server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert rate.value.status_code == 429 and rate.value.body["message"] == "Rate limit reached for requests"  # type: ignore[index]
    assert rate.value.response.headers["retry-after"] == "1"
    with pytest.raises(openai.InternalServerError):
        oai(model_server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        ant(model_server).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]


def test_a_wrong_key_is_refused_as_the_providers_do(model_server: ModelServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        oai(model_server, "sk-wrong").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.AuthenticationError) as caught:
        ant(model_server, "sk-wrong").messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_malformed_conversations_are_refused(model_server: ModelServer) -> None:
    unanswered = {"id": "call_9", "type": "function", "function": {"name": "bash", "arguments": "{}"}}
    with pytest.raises(openai.BadRequestError, match="call_9"):
        oai(model_server).chat.completions.create(
            model="m",
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": None, "tool_calls": [unanswered]},  # type: ignore[list-item]
                {"role": "user", "content": "and?"},
            ],
        )
    with pytest.raises(anthropic.BadRequestError, match="toolu_9"):
        ant(model_server).messages.create(
            model="m",
            max_tokens=5,
            messages=[
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_9", "name": "bash", "input": {}}],
                },
                {"role": "user", "content": "and?"},
            ],
        )
    assert model_server.requests and not model_server.bodies("nothing")
