"""`orch runs events`, and the run's log that `orch run` shows live, say each tool call as a person
reads it, never as a Python dict."""

from __future__ import annotations

import pytest

from orch.cli.run import _event_line
from orch.loop.transcript import tool_call_text, transcript_line


@pytest.mark.parametrize(
    ("name", "arguments", "said"),
    [
        ("bash", {"command": "ls -la"}, "ls -la"),
        ("read_file", {"path": "notes.md"}, "notes.md"),
        ("write_file", {"path": "k.txt", "content": "hello world\n"}, "k.txt (12 bytes)"),
        ("write_file", {"path": "é.txt", "content": "é"}, "é.txt (2 bytes)"),  # bytes, not characters
        ("edit_file", {"path": "k.txt", "old": "hello", "new": "bye"}, "k.txt"),
        ("list_files", {"path": ""}, "."),
        ("list_files", {}, "."),
        ("frobnicate", {"a": 1, "b": "x y"}, "a=1 b=x y"),  # a tool the loop does not offer
        ("write_file", {"content": "x"}, "content=x"),  # arguments that lack a field
        ("bash", "not json {", "not json {"),  # the model's text, when it was not a JSON object
        # JSON that is no object, and values that are no text, as JSON: never Python's None.
        ("bash", None, "null"),
        ("frobnicate", [1, None, "é"], '[1, null, "é"]'),
        ("frobnicate", {"a": None, "b": ["é"], "c": True}, 'a=null b=["é"] c=true'),
    ],
)
def test_a_tool_call_reads_as_text(name: str, arguments: object, said: str) -> None:
    assert tool_call_text(name, arguments) == said


def test_an_event_line_has_the_tool_call_and_the_answer() -> None:
    call = {"type": "tool_call", "name": "write_file", "arguments": {"path": "k.txt", "content": "***"}}
    assert _event_line(call) == "→ write_file k.txt (3 bytes)"
    assert transcript_line("tool_call", call) == "→ write_file k.txt (3 bytes)"  # the live log
    assert _event_line({"type": "final", "text": "The answer."}) == "The answer."
    assert "{" not in _event_line(
        {**call, "name": "edit_file", "arguments": {"path": "a", "old": "b", "new": "c"}}
    )


def test_refused_calls_and_a_cut_answer_are_said() -> None:
    """A turn's tool calls beyond its limit, and an answer cut as stdout was, were in the events
    but not in what a person reads."""
    call = {"input_tokens": 9, "output_tokens": 3, "duration": 0.5, "refused_calls": 2}
    assert transcript_line("model_call", call).endswith(" · 2 more tool calls refused: over the turn's limit")
    assert "refused" not in transcript_line("model_call", {**call, "refused_calls": None})
    cut = _event_line({"type": "final", "text": "x", "truncated": True})
    assert cut == "x\n(the answer was cut at the 1 MiB limit, as the run's stdout was)"
