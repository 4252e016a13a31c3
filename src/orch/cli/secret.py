"""`orch secret`: the workspace's secrets (API keys and the like) that agents get as environment
variables. Values go to the server and never come back (see docs/secrets.md)."""

from __future__ import annotations

import os
import stat
import sys
from typing import IO, Any

import typer

from orch.cli.output import command, console, ok, print_json
from orch.cli.utils import JSON, plain_table
from orch.client.transport import Transport, listed, segment
from orch.errors import InvalidInput
from orch.reading import STDIN, read_bounded
from orch.secret.names import MAX_VALUE_BYTES, check_name, check_value

app = typer.Typer(
    help="Workspace secrets: values agents get as environment variables, never shown again.",
    no_args_is_help=True,
)

NAME = typer.Argument(..., help="The secret's name, an environment variable's: e.g. OPENAI_API_KEY.")
PIPE_FIX = (
    'Pipe the value in (`printf %s "$KEY" | orch secret set NAME`, or `orch secret set NAME < FILE`), '
    "or pass --value (which your shell's history keeps)."
)


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _piped(stream: IO[Any] | None = None) -> bool:
    """Whether standard input (or `stream`) brings a value: a pipe (`echo KEY | ...`), or a file
    that holds something (`< key.txt`). A terminal, /dev/null, an empty file or a closed one do
    not: a script run without input (cron, CI) may still pass --value."""
    stream = sys.stdin if stream is None else stream
    try:
        found = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # closed, or no descriptor at all
        return False
    return (
        stat.S_ISFIFO(found.st_mode)
        or stat.S_ISSOCK(found.st_mode)
        or (stat.S_ISREG(found.st_mode) and found.st_size > 0)
    )


def _value_from_stdin() -> str:
    """The value on standard input, without one line ending at its end (`echo` adds one)."""
    if sys.stdin is None:  # closed (`<&-`): Python has no stream for it
        raise InvalidInput("No value given, and standard input is closed.", PIPE_FIX)
    if _interactive():
        raise InvalidInput("No value given, and standard input is a terminal.", PIPE_FIX)
    too_large = InvalidInput(
        "The value on standard input is larger than 64 KiB, the most a secret holds.",
        "Store a shorter value, such as a key or a token rather than a whole file.",
    )
    data = read_bounded(STDIN, MAX_VALUE_BYTES + 2, too_large)  # and its last line ending
    held = data
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        said = "held only a line ending, which is not part of the value" if held else "held nothing"
        raise InvalidInput(f"The secret's value is empty: standard input {said}.", PIPE_FIX)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            "The value on standard input is not UTF-8 text.",
            "Store text; for binary data, store it base64-encoded and decode it in the agent.",
        ) from None


@app.command("set")
@command
def set_(
    name: str = NAME,
    value: str = typer.Option(
        None,
        "--value",
        help="The value. Without it, standard input is read (less its last line ending); "
        "both at once are refused.",
    ),
) -> None:
    """Create or replace a secret; its value comes from standard input, or --value."""
    check_name(name)
    if value == "":
        raise InvalidInput("The secret's value is empty: --value is.", PIPE_FIX)
    if value is not None and _piped():  # which one was meant? neither is taken silently
        raise InvalidInput(
            "The value was given two ways: --value, and on standard input.",
            "Give it one way: pipe it in without --value (better: the shell's history keeps "
            "--value), or pass --value without piping anything in.",
        )
    text = _value_from_stdin() if value is None else value
    check_value(text)
    data = Transport.from_settings().put(f"/v1/secrets/{segment(name)}", json={"value": text})
    done = "Created" if data["created_at"] == data["updated_at"] else "Updated"
    ok(f"{done} secret {data['name']}: agents that list it under secrets: in orch.yaml get it.")


@app.command("list")
@command
def list_(json_: bool = JSON) -> None:
    """List the workspace's secrets: names and times, never values."""
    found = listed(Transport.from_settings().get("/v1/secrets"))
    if json_:
        print_json(found)
        return
    if not found:
        console.print("No secrets in this workspace. Set one with `orch secret set NAME`.", markup=False)
        return
    table = plain_table()
    for col in ("NAME", "CREATED", "UPDATED"):
        table.add_column(col, key=col == "NAME")
    for s in found:
        table.add_row(s["name"], s["created_at"][:19], s["updated_at"][:19])
    console.print(table)


@app.command("delete")
@command
def delete(name: str = NAME) -> None:
    """Delete a secret: runs of agents that ask for it fail from then on, naming it."""
    check_name(name)
    Transport.from_settings().delete(f"/v1/secrets/{segment(name)}")
    ok(f"Deleted secret {name}.")
