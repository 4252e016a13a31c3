"""`orch sandbox`: sandboxes on demand, held open and driven step by step (docs/sandboxes.md)."""

from __future__ import annotations

import codecs
import contextlib
import re
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from orch import config as config_mod
from orch.cli.output import command, console, err_console, escape, print_json, report
from orch.cli.terminal_text import TerminalText
from orch.cli.utils import JSON, finite, plain_table, variables
from orch.client.exec_stream import exec_events
from orch.client.transport import CREATE_TIMEOUT, Transport, check_name, listed
from orch.errors import Forbidden, InvalidInput, NotFound, OrchError, ServerUnreachable, Unauthorized
from orch.models import new_id
from orch.reading import STDIN, read_bounded
from orch.sizes import format_size
from orch.text import utf8

app = typer.Typer(
    help="Sandboxes on demand: held open for commands and files, removed when idle.",
    no_args_is_help=True,
)

NDJSON = "application/x-ndjson"
MARGIN = 30.0  # seconds an answer may take beyond the command's own timeout
DEFAULT_EXEC_TIMEOUT = 60.0  # the server's, for the wait of a collected answer
LONGEST_WAIT = 365 * 86400.0  # seconds: longer than any sandbox's lifetime (86400 by default)
# ID:PATH in `cp`: a sandbox's id, a colon, a path in it.
_REMOTE = re.compile(r"^(sbx_[0-9a-z]+):(.*)$", re.DOTALL)


# The most text a command is given on its standard input (services/sandboxes.py's MAX_STDIN), and
# the most bytes read for it: that, and a UTF-8 BOM.
MAX_STDIN = 1024 * 1024
STDIN_BYTES = MAX_STDIN + len(codecs.BOM_UTF8)


def _stdin() -> str:
    too_large = InvalidInput(
        f"The standard input is larger than 1 MiB ({MAX_STDIN:,} bytes), the most a command is given.",
        "Write large data to a file first (`orch sandbox cp`), and read it from there.",
    )
    return utf8(
        read_bounded(STDIN, STDIN_BYTES, too_large),
        "The standard input",
        "Give -i text; copy binary data in with `orch sandbox cp` and run the command on the file.",
    )


def _path(sandbox_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", sandbox_id):
        raise InvalidInput(f"{sandbox_id!r} is not a sandbox id.", "Sandbox ids look like sbx_0123456789.")
    return f"/v1/sandboxes/{sandbox_id}"


def _summary(s: dict[str, Any]) -> str:
    memory = s["memory_bytes"] // 2**20
    network = ", network" if s["network"] else ""
    node = f" · on node {s['node']}" if s.get("node") else ""
    return (
        f"{s['id']} {s['status']} · environment {s['environment']['name']} · {memory} MiB, "
        f"{s['cpus']:g} CPU{network} · {_goes(s)}{node}"
    )


def _goes(s: dict[str, Any]) -> str:
    """When the sandbox is removed: after its idle timeout, or sooner, at the end of its
    lifetime (the server's sandbox_lifetime) when that comes first, as `expires_at` says."""
    idle = f"removed after {s['timeout']} s idle"
    try:
        created, expires = datetime.fromisoformat(s["created_at"]), datetime.fromisoformat(s["expires_at"])
    except (KeyError, TypeError, ValueError):
        return idle
    left = (expires - created).total_seconds()
    if left >= s["timeout"] - 1:  # the idle timeout comes first (or together)
        return idle
    return (
        f"removed {left:.0f} s after its creation, at the end of its lifetime ({s['expires_at'][:19]}), "
        f"before {s['timeout']} s idle could pass"
    )


@app.command()
@command
def create(
    env: str = typer.Option(
        None,
        "--env",
        "-e",
        metavar="ENV",
        help="Environment name or id \\[default: the workspace's default, else python].",
    ),
    memory: str = typer.Option(
        None, "--memory", "-m", metavar="SIZE", help="Memory limit, such as 512Mi \\[default: 512Mi]."
    ),
    cpus: float = typer.Option(None, "--cpus", help="CPUs, such as 0.5 \\[default: 1]."),
    timeout: int = typer.Option(
        None, "--timeout", "-t", help="Idle seconds before it is removed \\[default: 600]."
    ),
    network: bool = typer.Option(
        False, "--network", help="Let it reach the internet (never the host or other sandboxes)."
    ),
    json_: bool = JSON,
) -> None:
    """Start a sandbox and hold it open; prints its id (the rest goes to stderr)."""
    finite(cpus, "--cpus")
    check_name(env)  # --env '' names no environment; it is not the default one
    # The id is chosen here, so that a create cut short by Ctrl-C can be undone by it even when
    # the server's answer was on its way (or in a buffer) as the connection closed.
    sandbox_id = new_id("sbx")
    body = {
        "environment": env,
        "memory": memory,
        "cpus": cpus,
        "timeout": timeout,
        "network": network,
        "id": sandbox_id,
    }
    server = Transport.from_settings()
    # Ctrl-C cancels the create until its id is about to be printed: from then on the sandbox is
    # the caller's (its id is printed, exit 0), so Ctrl-C is ignored until the process is gone
    # (SIG_IGN, through the interpreter's exit too, which puts a Python handler's signals back
    # to their default, and where a KeyboardInterrupt is a traceback).
    _on_sigint(signal.default_int_handler)
    try:
        created = server.post("/v1/sandboxes", json=body, timeout=server.waiting(CREATE_TIMEOUT))
        _on_sigint(signal.SIG_IGN)
    except KeyboardInterrupt:
        _on_sigint(signal.SIG_IGN)  # the answer is decided: exit 130
        _cancel(server, sandbox_id)
        raise typer.Exit(130) from None
    if json_:
        print_json(created)
        return
    console.print(created["id"])
    err_console.print(f"[green]✓[/green] {escape(_summary(created))}", soft_wrap=True)


# How long an interrupted create waits for the server to remove what it made.
CANCEL_TIMEOUT = 10.0


def _cancel(server: Transport, sandbox_id: str) -> None:
    """Undo a create that Ctrl-C cut short (the connection to the server closed): remove the
    sandbox by the id the CLI chose, whether the server had stored it or not. The server removes
    one it was starting when it sees its caller gone; this covers the one whose answer was sent
    as the caller left (read by nobody), which the server cannot know."""
    said = "Interrupted: the create was cancelled"
    try:
        server.delete(_path(sandbox_id), timeout=server.waiting(CANCEL_TIMEOUT))
    except NotFound:  # never stored: the server stopped the create before (or stops it now)
        err_console.print(f"{said}; no sandbox was left.")
    except OrchError as e:
        err_console.print(
            f"{said}, but the sandbox it was making ({sandbox_id}) could not be removed: "
            f"{escape(e.message)} Remove it with `orch sandbox rm {sandbox_id}`."
        )
    else:
        err_console.print(f"{said}; the sandbox it was making ({sandbox_id}) was removed.")


def _on_sigint(handler: Any) -> None:
    """Ctrl-C's handler from now on (only the main thread may set one: elsewhere, as a library's
    call, it stays as it is)."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, handler)


@app.command("exec")
@command
def exec_(
    sandbox: str = typer.Argument(..., metavar="ID", help="Sandbox id."),
    argv: list[str] = typer.Argument(
        ..., metavar="-- COMMAND [ARG...]", help="The command and its arguments."
    ),
    timeout: float = typer.Option(
        None, "--timeout", "-t", help="Seconds before the command is killed \\[default: 60]."
    ),
    env: list[str] = typer.Option(
        [], "--env", "-e", metavar="KEY=VALUE", help="An environment variable for the command (repeatable)."
    ),
    workdir: str = typer.Option(
        None, "--workdir", "-w", metavar="DIR", help="Its working directory \\[default: /home/user]."
    ),
    stdin: bool = typer.Option(False, "--stdin", "-i", help="Give it this command's standard input."),
    json_: bool = typer.Option(
        False, "--json", help="Print {exit_code, stdout, stderr, duration} at its end (exit 0)."
    ),
) -> None:
    """Run a command in a sandbox as its user, streaming its output.

    orch exits with the command's exit code (124: it timed out; 2: the sandbox was removed).

    With --json, the result is printed at its end and orch exits 0."""
    finite(timeout, "--timeout")
    body = {
        "command": argv,
        "timeout": timeout,
        "env": variables(env) or None,
        "workdir": workdir,
        "stdin": _stdin() if stdin else None,
    }
    client = Transport.from_settings()
    wait = client.waiting(_answer_wait(timeout))
    if json_:
        print_json(client.post(f"{_path(sandbox)}/exec", json=body, timeout=wait))
        return
    end = _stream(client, sandbox, body, wait)
    if end.get("timed_out"):
        err_console.print(f"[red]✗[/red] {_timed_out(end.get('timeout'), timeout)}")
    raise typer.Exit(int(end["exit_code"]))


def _timed_out(applied: object, asked: float | None) -> str:
    """The line for a command that timed out, naming the timeout the server applied (its answer's
    `timeout`: the default is the shorter of 60 s and the sandbox's lifetime), else the one asked
    for; a server that says none, with none asked, gets no number rather than a guessed one."""
    seconds = applied if isinstance(applied, int | float) and not isinstance(applied, bool) else asked
    return f"timed out after {seconds:g} s; it was killed." if seconds else "timed out; it was killed."


def _answer_wait(timeout: float | None) -> float:
    """Seconds to wait for the answer of a command given `timeout`: its own time and a margin. A
    timeout out of the server's range (0 or less, longer than the sandbox's lifetime) is the
    server's to refuse, in its words; the wait for that answer stays one a socket can keep (its
    timeout is a 64-bit count of nanoseconds, ~292 years)."""
    seconds = timeout or DEFAULT_EXEC_TIMEOUT
    return min(max(seconds, 0.0), LONGEST_WAIT) + MARGIN


def _stream(client: Transport, sandbox: str, body: dict[str, Any], wait: object) -> dict[str, Any]:
    """Write the command's output as it comes; return its last line (exit code, duration)."""
    outputs = {  # made safe to show on a terminal (cli/terminal_text.py)
        "stdout": TerminalText(sys.stdout, console.is_terminal),
        "stderr": TerminalText(sys.stderr, err_console.is_terminal),
    }
    headers = {"Accept": NDJSON}
    with client.stream("POST", f"{_path(sandbox)}/exec", json=body, headers=headers, timeout=wait) as resp:
        for stream, event in exec_events(resp, client.url):
            if stream == "end":
                for out in outputs.values():
                    out.end()
                return event
            out = outputs[stream]
            out.write(event["data"])
            out.out.flush()
    raise OrchError(
        f"The answer from sandbox {sandbox} ended before the command's exit code.",
        "The server may have stopped; check it (`orch sandbox list`), then run the command again.",
    )


@app.command()
@command
def cp(
    source: str = typer.Argument(..., help="LOCAL file (- for standard input), or ID:PATH."),
    target: str = typer.Argument(..., help="ID:PATH, or LOCAL file (- for standard output)."),
) -> None:
    """Copy one file into a sandbox (LOCAL ID:PATH) or out of one (ID:PATH LOCAL).

    A relative PATH is under /home/user; the file is written and read by the sandbox user."""
    up, down = _REMOTE.match(target), _REMOTE.match(source)
    if bool(up) == bool(down):
        raise InvalidInput(
            "One side of `orch sandbox cp` must be ID:PATH in a sandbox, the other a local file.",
            "Copy in with `orch sandbox cp LOCAL ID:PATH`, out with `orch sandbox cp ID:PATH LOCAL`.",
        )
    client = Transport.from_settings()
    if up:
        files = f"{_path(up[1])}/files"  # a malformed id is said before anything is read
        data = _read_local(source)
        # A directory in the sandbox takes the file under its own name, as a local one does.
        named = {"name": Path(source).name} if source != "-" else {}
        done = client.put(
            files,
            params={"path": up[2], **named},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        err_console.print(
            f"[green]✓[/green] {escape(source)} → {up[1]}:{escape(done['path'])} ({done['size']} bytes)"
        )
        return
    assert down is not None
    if target != "-" and target.endswith("/") and not Path(target).is_dir():
        # As `cp FILE nodir/` and the sandbox's own side: a trailing / names a directory.
        raise InvalidInput(
            f"No directory {target!r} here: a target ending in / names a directory, and nothing was copied.",
            "Create the directory first, or leave out the / to write a file of that name.",
        )
    data = client.send("GET", f"{_path(down[1])}/files", params={"path": down[2]}).content
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    where = Path(target)
    if where.is_dir():
        where = where / Path(down[2]).name
    try:
        where.write_bytes(data)
    except OSError as e:
        raise InvalidInput(
            f"Cannot write {str(where)!r}: {e.strerror}.", "Give a writable local path."
        ) from None
    err_console.print(
        f"[green]✓[/green] {down[1]}:{escape(down[2])} → {escape(str(where))} ({len(data)} bytes)"
    )


def _read_local(source: str) -> bytes:
    """The local file to copy in (`-`: standard input), read up to the setting sandbox_file_limit
    as this machine's settings give it (64 MiB unless set): a server that takes less refuses the
    rest itself."""
    most = int(config_mod.load().sandbox_file_limit)
    named = "The standard input" if source == STDIN else repr(source)
    too_large = InvalidInput(
        f"{named} is larger than the {format_size(most)} a sandbox takes in one call.",
        "Send it in parts or compressed (the setting sandbox_file_limit sets the limit, on the server "
        "and, as ORCH_SANDBOX_FILE_LIMIT, for what orch reads here).",
    )
    if source == STDIN:
        return read_bounded(STDIN, most, too_large)
    path = Path(source)
    if path.is_dir():
        raise InvalidInput(
            f"{source!r} is a directory; cp copies one file.", "Pass a file (or tar the directory first)."
        )
    try:
        return read_bounded(path, most, too_large)
    except OSError as e:
        raise InvalidInput(f"Cannot read {source!r}: {e.strerror}.", "Pass a readable local file.") from None


@app.command("list")
@command
def list_(
    all_: bool = typer.Option(False, "--all", "-a", help="Include removed and failed sandboxes."),
    json_: bool = JSON,
) -> None:
    """List the workspace's sandboxes, newest first."""
    found = listed(Transport.from_settings().get("/v1/sandboxes", params={"all": "true"} if all_ else {}))
    if json_:
        print_json(found)
        return
    if not found:
        none = "No sandboxes in this workspace" if all_ else "No sandboxes open"
        err_console.print(f"{none}. Start one with `orch sandbox create`.")
        return
    table = plain_table()
    on_nodes = any(s.get("node") for s in found)  # a cluster's: which node holds each
    ended = any(s["reason"] for s in found)  # with --all: why each ended one did
    columns: tuple[str, ...] = ("ID", "STATUS", "ENVIRONMENT", "MEMORY", "CREATED", "LAST USED", "EXPIRES")
    columns += ("NODE",) * on_nodes + ("REASON",) * ended
    for col in columns:
        key = col in ("ID", "STATUS", "MEMORY", "NODE")
        table.add_column(
            col, key=key, no_wrap=col != "REASON", justify="right" if col == "MEMORY" else "left"
        )
    for s in found:
        table.add_row(
            s["id"],
            s["status"],
            escape(s["environment"]["name"]),
            f"{s['memory_bytes'] // 2**20} MiB",
            s["created_at"][:19],
            s["last_used_at"][:19],
            (s["expires_at"] or "")[:19],
            *([s.get("node") or ""] * on_nodes),
            *([escape(s["reason"] or "")] * ended),
        )
    console.print(table)


@app.command()
@command
def rm(sandbox: list[str] = typer.Argument(..., metavar="ID...", help="Sandbox ids.")) -> None:
    """Remove sandboxes and everything in them.

    Every id is tried; orch exits 2 if one was not a sandbox of the workspace, as rm does."""
    client = Transport.from_settings()
    codes = []
    for sandbox_id in sandbox:
        try:
            _remove(client, sandbox_id)
        except (ServerUnreachable, Unauthorized, Forbidden):
            raise  # the same for every id: said once
        except OrchError as e:
            report(e)
            codes.append(e.exit_code)
    if codes:
        raise typer.Exit(2 if 2 in codes else max(codes))


def _remove(client: Transport, sandbox_id: str) -> None:
    path = _path(sandbox_id)
    shown = client.get(path)
    if shown["status"] in ("removed", "failed"):
        why = f" ({shown['reason']})" if shown["reason"] else ""
        said = "was already removed" if shown["status"] == "removed" else "had already failed"
        err_console.print(f"{sandbox_id} {said}{escape(why)}; nothing to remove.")
        return
    client.delete(path)
    err_console.print(f"[green]✓[/green] Removed {sandbox_id}")
