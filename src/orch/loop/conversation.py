"""The conversation a loop holds: the run's input, the model's turns and the tools' results, all
of which go to the model again with every call. Bounded, because nothing else bounds it: each
tool output is within tool_output_limit (up to 1 MiB) and a turn runs up to 32 tools, so a model
that keeps asking would grow it by tens of MiB a turn, held in the server's memory and sent (and
serialized, a second copy) whole each time; `max_tokens` cannot stop an endpoint that reports no
usage. The bound is on the conversation's size as the request carries it (its texts as JSON
writes them), checked as each part is added, so an oversized request is never built.

MAX_CONVERSATION is far above what any model reads: the largest context windows (a million or
two tokens) hold a few MiB of text, and the Messages API refuses a request over 32 MB. A run
that passes it fails, saying how to stay within it."""

from __future__ import annotations

import json

from orch.loop.model import Message, Results, ToolResult, Turn, UserText
from orch.loop.outcome import failed
from orch.sizes import format_apart, format_size

MAX_CONVERSATION = 32 * 1024**2  # bytes: the system prompt and every message, as JSON


class Conversation:
    """The messages so far (`messages`, what the next model call sends) and their `size`."""

    def __init__(self, system: str, first: str, output_limit: int) -> None:
        self.limit = MAX_CONVERSATION
        self.output_limit = output_limit  # the loop's tool_output_limit, named in the fix
        self.messages: list[Message] = [UserText(first)]
        self.size = _json_size(system) + _json_size(first)

    def add(self, part: Turn | ToolResult) -> None:
        """Add the model's turn, or one result of its tool calls (the results of a turn make one
        message); Stopped, the run failed, when the conversation would pass the bound."""
        size = self.size + _size(part)
        if size > self.limit:
            grown = format_apart(size, self.limit)
            raise failed(
                f"the conversation grew past {format_size(self.limit)} (to {grown}), "
                "the most a loop holds and sends the model, all of it with every call; lower "
                f"loop.tool_output_limit ({format_size(self.output_limit)}) or have the system prompt "
                "ask for fewer tool calls a turn and shorter output"
            )
        self.size = size
        last = self.messages[-1]
        if isinstance(part, Turn):
            self.messages.append(part)
        elif isinstance(last, Results):
            self.messages[-1] = Results((*last.results, part))
        else:
            self.messages.append(Results((part,)))


def _size(part: Turn | ToolResult) -> int:
    if isinstance(part, ToolResult):
        return _json_size(part.call.id) + _json_size(part.output)
    calls = (_json_size(c.id) + _json_size(c.name) + _json_size(c.arguments) for c in part.calls)
    return _json_size(part.text) + sum(calls)


def _json_size(text: str) -> int:
    """Bytes of `text` in the request's JSON (both SDKs write UTF-8, not `\\u` escapes)."""
    return len(json.dumps(text, ensure_ascii=False).encode())
