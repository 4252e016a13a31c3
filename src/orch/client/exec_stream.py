"""`exec_events`: the one reader of a command's answer streamed from a sandbox (JSON lines,
application/x-ndjson), for `Sandbox.exec` and `orch sandbox exec` alike. A module of its own, so
that the CLI loads neither the client's records nor its dataclasses."""

from __future__ import annotations

from collections.abc import Iterator

from orch.client.transport import Answer, Reply, as_json_text, decode_lines, not_understood
from orch.errors import from_dict

OUTPUT = ("stdout", "stderr")


def exec_events(resp: Answer, url: str) -> Iterator[tuple[str, Reply]]:
    """The lines of a command's answer from the server at `url`, as they come: ("stdout" or
    "stderr", the line: its text in `data`) for output, then ("end", the line: `exit_code`, a
    whole number, and `duration`, `timed_out`) for its end. An error the server sent once the
    answer had begun raises as that error; a line of another shape (not an object, a stream other
    than these two, text that is not text, an exit code that is not a number) raises
    `not_understood`, as any answer of the wrong shape does."""
    for event in decode_lines(resp, url):
        if "stream" in event:
            stream, data = event["stream"], event["data"]
            if stream not in OUTPUT:
                raise not_understood(url, f"a command's output on the stream {as_json_text(stream)}")
            if not isinstance(data, str):
                raise not_understood(url, f"a command's output that is {as_json_text(data)}, not text")
            yield stream, event
        elif "exit_code" in event:
            code = event["exit_code"]
            if isinstance(code, bool) or not isinstance(code, int):
                raise not_understood(url, f"the exit code {as_json_text(code)}")
            yield "end", event
            return
        elif "message" in event:  # the server's error, once the answer had begun
            raise from_dict(event)
