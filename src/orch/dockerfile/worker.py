"""Validation in a process of its own, so that it can be stopped (see bounded.py).

Run as a script, this reads requests on stdin and answers on stdout, each message a JSON
object after its length as 8 big-endian bytes. It first says it is ready, once the parser's
binding has loaded, so that a worker that can't start is told apart from one that a text
crashed. A request is {"text": ...}; the answer is the Validation (see to_wire), or {"bug":
...} when checking raised, which the caller raises again.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any, BinaryIO

from orch.dockerfile.findings import Finding, Severity
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.validate import Validation, check

HEADER = struct.Struct(">Q")
READY = {"ready": True}
# How long a worker may take to start (Python and the binding loading on a busy machine).
START_SECONDS = 20


def handle(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request."""
    try:
        validation = check(str(request["text"]))
    except Exception as exc:  # noqa: BLE001 - handed back: the caller raises it as the bug it is
        return {"bug": f"{type(exc).__name__}: {exc}"}
    return to_wire(validation)


def to_wire(v: Validation) -> dict[str, Any]:
    """A Validation as JSON."""
    return {
        "findings": [f.to_dict() for f in v.findings],
        "instructions": [
            [i.line, i.end_line, i.keyword, i.flags, i.args, i.json_form, i.heredocs, i.original]
            for i in v.instructions
        ],
    }


def from_wire(data: dict[str, Any]) -> Validation:
    """The Validation that to_wire wrote."""
    findings = tuple(
        Finding(f["line"], f["instruction"], Severity(f["severity"]), f["message"], f["fix"])
        for f in data["findings"]
    )
    instructions = tuple(
        Instruction(
            line=line,
            end_line=end_line,
            keyword=keyword,
            flags=tuple(flags),
            args=tuple(args),
            json_form=json_form,
            heredocs=tuple((name, body) for name, body in heredocs),
            original=original,
        )
        for line, end_line, keyword, flags, args, json_form, heredocs, original in data["instructions"]
    )
    return Validation(findings, instructions)


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


def encode(message: dict[str, Any]) -> bytes:
    """A message as sent: its length, then its JSON."""
    body = json.dumps(message).encode()
    return HEADER.pack(len(body)) + body


def main() -> None:
    """Answer requests until stdin closes (the parent has gone, or let this worker go)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Below the server's own threads: a long parse takes a core, but not from the requests.
    os.nice(5)
    stdout.write(encode(READY))
    stdout.flush()
    while (request := read_message(stdin)) is not None:
        stdout.write(encode(handle(request)))
        stdout.flush()


if __name__ == "__main__":
    main()
