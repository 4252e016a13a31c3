"""A scripted model server on 127.0.0.1 for the managed loop's tests: it speaks OpenAI's Chat
Completions (`POST /v1/chat/completions`) and Anthropic's Messages API (`POST /v1/messages`) as
the providers document them, answers turn by turn from a script, and records every request.

Like the real endpoints it checks what it is sent: the API key (`Authorization: Bearer`, or
`x-api-key` for Messages), `anthropic-version`, `max_tokens` (Messages), and the conversation's shape: every
tool call answered by a result in the next message(s), with matching ids, roles alternating
(Messages). A request that breaks one gets the provider's 400 error, so a loop that sends a
malformed conversation fails its test. A `Trickle` step answers as a hostile endpoint would: a
byte at a time, never ending, until the client closes the connection (`hung_up`).

    with ModelServer() as server:
        server.script(Reply(calls=[("bash", {"command": "ls"})]), Reply(text="done"))
        ... OpenAI(base_url=server.openai_url, api_key=server.key) ...
        server.requests  # [Recorded(path, headers, body), ...]
"""

from __future__ import annotations

import gzip
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

KEY = "sk-test-key"


@dataclass(frozen=True)
class Reply:
    """A turn the model answers: text, tool calls (name, arguments), tokens."""

    text: str = ""
    calls: Sequence[tuple[str, Any]] = ()  # arguments: a dict, or (Chat Completions) raw JSON text
    input_tokens: int = 10
    output_tokens: int = 5
    delay: float = 0.0  # seconds before answering
    custom: Sequence[tuple[str, str]] = ()  # Chat Completions' custom tool calls: (name, input)
    gzip: bool = False  # the answer sent compressed (`content-encoding: gzip`)


@dataclass(frozen=True)
class Fail:
    """An error answer: the status and the endpoint's message, in the provider's error shape."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trickle:
    """An answer that never ends, as a hostile endpoint sends it: headers that promise `size`
    bytes, then one byte every `every` seconds (each restarting the client's read timeout), until
    the client closes the connection (`ModelServer.hung_up` counts those) or the server stops."""

    size: int = 100_000
    every: float = 0.2


Step = Reply | Fail | Trickle


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ModelServer:
    def __init__(self, key: str | None = KEY) -> None:
        self.key = key
        self.requests: list[Recorded] = []
        self._steps: list[Step] = []
        self._forever: Step | None = None
        self._respond: Callable[[dict[str, Any]], Step] | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.trickling = 0  # Trickle answers being sent now
        self.hung_up = 0  # Trickle answers whose client closed the connection
        self._stopping = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        return self.url  # the SDK adds /v1/messages

    def script(self, *steps: Step) -> None:
        """Answer the next requests with `steps`, in order."""
        with self._lock:
            self._steps += steps

    def forever(self, step: Step) -> None:
        """Once the script is played, answer every request with `step`."""
        self._forever = step

    def respond(self, answer: Callable[[dict[str, Any]], Step]) -> None:
        """Once the script is played, answer each request with `answer(body)`: for several
        conversations at once, each answered by what it holds."""
        self._respond = answer

    def bodies(self, path: str = "") -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith(path)]

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()

    def _next(self, body: dict[str, Any]) -> Step:
        with self._lock:
            if self._steps:
                return self._steps.pop(0)
        if self._respond is not None:
            return self._respond(body)
        return self._forever or Fail(500, "the test's script has no more turns")

    def answer(
        self, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, str], Any]:
        """The status, extra headers and body to answer; a Trickle is sent by the handler."""
        self.requests.append(Recorded(path, headers, body))
        anthropic = path == "/v1/messages"
        if path not in ("/v1/chat/completions", "/v1/messages"):
            return 404, {}, {"error": {"message": f"Unknown path {path}", "type": "invalid_request_error"}}
        problem = (
            _anthropic_problem(headers, body, self.key)
            if anthropic
            else _openai_problem(headers, body, self.key)
        )
        step: Step = Fail(*problem) if problem else self._next(body)
        if isinstance(step, Fail):
            return step.status, step.headers, _error(anthropic, step)
        if isinstance(step, Trickle):
            return 200, {}, step
        time.sleep(step.delay)
        made = (
            _message(step, body["model"], self._ids)
            if anthropic
            else _completion(step, body["model"], self._ids)
        )
        return 200, {"content-encoding": "gzip"} if step.gzip else {}, made


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(size) or b"{}")
            except ValueError:
                body = {}
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, answer = server.answer(self.path, headers, body)
            if isinstance(answer, Trickle):
                self.trickle(answer)
                return
            data = json.dumps(answer).encode()
            if extra.get("content-encoding") == "gzip":
                data = gzip.compress(data)
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{next(server._ids)}")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (its timeout): nothing to answer
                pass

        def trickle(self, step: Trickle) -> None:
            with server._lock:
                server.trickling += 1
            hung_up = False
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(step.size))
                self.end_headers()
                for _ in range(step.size):
                    if server._stopping.is_set():
                        break
                    self.wfile.write(b" ")  # JSON's whitespace, before a value that never comes
                    readable, _, _ = select.select([self.connection], [], [], step.every)
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        hung_up = True  # the client shut the connection down (FIN)
                        break
            except OSError:  # the client closed it (a reset)
                hung_up = True
            finally:
                with server._lock:
                    server.trickling -= 1
                    server.hung_up += hung_up

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _error(anthropic: bool, fail: Fail) -> dict[str, Any]:
    if anthropic:
        kind = _ANTHROPIC_ERRORS.get(fail.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": fail.message}}
    kind = "rate_limit_exceeded" if fail.status == 429 else "invalid_request_error"
    return {"error": {"message": fail.message, "type": kind, "param": None, "code": None}}


def _completion(reply: Reply, model: str, ids: Iterator[int]) -> dict[str, Any]:
    """A chat.completion object, as https://platform.openai.com/docs/api-reference/chat/object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.calls or reply.custom:
        message["tool_calls"] = [
            {
                "id": f"call_{next(ids)}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for name, args in reply.calls
        ] + [
            {"id": f"call_{next(ids)}", "type": "custom", "custom": {"name": name, "input": text}}
            for name, text in reply.custom
        ]
    return {
        "id": f"chatcmpl-{next(ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if reply.calls or reply.custom else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
        },
        "system_fingerprint": None,
    }


def _message(reply: Reply, model: str, ids: Iterator[int]) -> dict[str, Any]:
    """A Message, as https://docs.anthropic.com/en/api/messages."""
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    content += [
        {"type": "tool_use", "id": f"toolu_{next(ids):04d}", "name": name, "input": args}
        for name, args in reply.calls
    ]
    return {
        "id": f"msg_{next(ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if reply.calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    }


def _openai_problem(headers: dict[str, str], body: dict[str, Any], key: str | None) -> tuple[int, str] | None:
    if key is not None and headers.get("authorization") != f"Bearer {key}":
        return 401, "Incorrect API key provided."
    if (
        not isinstance(body.get("model"), str)
        or not isinstance(body.get("messages"), list)
        or not body["messages"]
    ):
        return 400, "'model' and a non-empty 'messages' are required."
    waiting: list[str] = []  # tool_call ids still to answer
    for i, m in enumerate(body["messages"]):
        role = m.get("role")
        if role == "tool":
            if m.get("tool_call_id") not in waiting:
                return 400, f"messages[{i}]: a 'tool' message must answer a tool_call of the message before."
            waiting.remove(m["tool_call_id"])
            continue
        if waiting:
            return 400, (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(waiting)
            )
        if role not in ("system", "user", "assistant"):
            return 400, f"messages[{i}]: unknown role {role!r}."
        if role == "assistant":
            waiting = [c["id"] for c in m.get("tool_calls") or []]
    for tool in body.get("tools") or []:
        if tool.get("type") != "function" or "name" not in tool.get("function", {}):
            return 400, "tools: each tool must be {type: function, function: {name, parameters}}."
    return None


def _anthropic_problem(
    headers: dict[str, str], body: dict[str, Any], key: str | None
) -> tuple[int, str] | None:
    # The API takes the key as `x-api-key` or, as the SDK sends it since 2.x, `Authorization: Bearer`.
    if key is not None and key not in (headers.get("x-api-key"), headers.get("authorization", "")[7:]):
        return 401, "invalid x-api-key"
    if "anthropic-version" not in headers:
        return 400, "anthropic-version: header is required"
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return 400, "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(body.get("model"), str) or not isinstance(messages, list) or not messages:
        return 400, "model and messages: Field required"
    waiting: list[str] = []  # tool_use ids the next user message must answer
    for i, m in enumerate(messages):
        if m.get("role") != ("user" if i % 2 == 0 else "assistant"):
            return 400, f"messages.{i}: roles must alternate between user and assistant, starting with user"
        blocks = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        answered = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if sorted(answered) != sorted(waiting):
            return 400, (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(set(waiting) - set(answered)) or '-'}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
        if any(b.get("type") == "text" and not b.get("text") for b in blocks):
            return 400, f"messages.{i}: text content blocks must be non-empty"
        waiting = [b["id"] for b in blocks if b.get("type") == "tool_use"]
    if waiting:
        return 400, "the last message may not hold tool_use blocks without their results"
    return None


@pytest.fixture(name="model_server")
def model_server_fixture() -> Iterator[ModelServer]:
    """A started ModelServer (import this name; tests ask for `model_server`)."""
    with ModelServer() as server:
        yield server
