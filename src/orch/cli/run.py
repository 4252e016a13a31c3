"""`orch run` and `orch runs`: run agents in fresh sandboxes, follow and inspect runs."""

from __future__ import annotations

import codecs
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import IO, Any, NoReturn

import typer

from orch.cli import interrupt
from orch.cli.output import (
    Console,
    command,
    console,
    err_console,
    escape,
    pipe_closed,
    print_json,
    report,
)
from orch.cli.terminal_text import TerminalText, shown
from orch.cli.utils import JSON, plain_table, variables
from orch.client.follow import FINAL, POLL, event_pages
from orch.client.follow import follow as follow_output
from orch.client.transport import Transport, check_name, listed, segment
from orch.durations import duration_text
from orch.errors import Conflict, InvalidInput, NotFound, OrchError, ServerUnreachable
from orch.loop.transcript import transcript_line
from orch.models import new_id
from orch.reading import STDIN, read_bounded
from orch.text import utf8

app = typer.Typer(help="Runs: one execution of an agent in a fresh sandbox.", no_args_is_help=True)
TRUNCATED = "(output was cut at the 1 MiB limit per stream)"
CANCEL_WAIT = 60.0  # seconds `orch run --json` waits for a run it cancelled to end


# The largest input a run takes (services/runs.py's MAX_INPUT: what the agent's ORCH_INPUT can
# hold), and the most bytes read for it from a file or standard input: that, and a UTF-8 BOM.
MAX_INPUT = 128 * 1024 - 1 - len("ORCH_INPUT=")
INPUT_BYTES = MAX_INPUT + len(codecs.BOM_UTF8)


def _read_input(value: str | None) -> str:
    if value is None:
        return ""
    fix = "Pass JSON in UTF-8 text."
    if value == "@":
        raise InvalidInput("--input @ names no file.", "Pass --input @FILE, e.g. --input @input.json.")
    if value == STDIN:
        text = utf8(
            read_bounded(STDIN, INPUT_BYTES, _too_large("on standard input")), "The standard input", fix
        )
    elif value.startswith("@"):
        name = value[1:]
        try:
            data = read_bounded(Path(name), INPUT_BYTES, _too_large(f"in {name!r}"))
        except OSError as e:
            raise InvalidInput(
                f"Cannot read the input file {name!r}: {e.strerror}.",
                "Pass --input @FILE with a readable file.",
            ) from None
        text = utf8(data, f"The input file {name!r}", fix)
    else:
        text = utf8(value, "The input", fix)
    try:
        json.loads(text, parse_constant=_not_json)
    except ValueError as e:
        raise InvalidInput(
            f"The input is not valid JSON ({e}).",
            "Pass JSON: text in double quotes inside single ones (--input '\"Summarise notes.md\"'), "
            'an object (--input \'{"url": "https://example.org"}\'), or --input @file.json.',
        ) from None
    return text


def _too_large(where: str) -> InvalidInput:
    return InvalidInput(
        f"The input {where} is larger than {MAX_INPUT:,} bytes, the most a run takes (128 KiB, what "
        "the agent's ORCH_INPUT variable can hold).",
        "Pass a smaller input, or let the agent download large data itself.",
    )


def _not_json(word: str) -> None:
    raise ValueError(f"{word} is not a JSON value")  # Python's json reads NaN and Infinity


def _env_text(run: dict[str, Any]) -> str:
    env = run["environment"]
    if not env["name"]:
        return ""
    rule = (run["environment_rule"] or "").replace("-", " ")
    return f"environment {env['name']} ({rule})"


def _summary(run: dict[str, Any]) -> str:
    took = f" in {duration_text(run['duration'])}" if run.get("duration") is not None else ""
    exit_text = f" · exit {run['exit_code']}" if run["exit_code"] is not None else ""
    said = run.get("reason") if run["status"] != "succeeded" else None
    # A reason that only repeats the exit code ("exit code 3") is said once, as the code.
    reason = f" · {said}" if said and not (exit_text and said == f"exit code {run['exit_code']}") else ""
    return f"{run['status'].replace('_', ' ')}{took}{exit_text}{reason}"


def _untrusted(text: str, on: Console) -> str:
    """Text a sandbox, a model or an endpoint wrote (a loop's transcript, a reason quoting an
    endpoint) as `on` shows it: on a terminal made safe as the agent's output is
    (cli/terminal_text.py), piped as it came. Printed with markup=False, or escaped."""
    return shown(text) if on.is_terminal else text


def _finish_line(run: dict[str, Any], on: Console = err_console) -> None:
    mark = "[green]✓[/green]" if run["status"] == "succeeded" else "[red]✗[/red]"
    on.print(f"{mark} {escape(_untrusted(_summary(run), on))}", soft_wrap=True)


class _Printer:
    """Prints a run's output as it comes: stdout to stdout, the rest to stderr. Remembers a line
    the output left open (an answer without its last newline), for `end_line`."""

    def __init__(self, show_log: bool) -> None:
        self.show_log = show_log
        self.open: IO[str] | None = None  # the stream whose last write did not end a line
        # What the agent wrote, made safe to show on a terminal (cli/terminal_text.py).
        self.texts = {
            "stdout": TerminalText(sys.stdout, console.is_terminal),
            "stderr": TerminalText(sys.stderr, err_console.is_terminal),
        }

    def __call__(self, stream: str, text: str) -> None:
        # The platform's notes, and a loop's transcript: what the model and the tools wrote.
        if stream == "log":
            if self.show_log:
                self.end_line(note=True)
                for line in text.splitlines():
                    err_console.print(
                        _untrusted(line, err_console), markup=False, style="dim", soft_wrap=True
                    )
            return
        self.texts[stream].write(text)
        out = self.texts[stream].out
        out.flush()
        self.open = None if text.endswith("\n") else out

    def end_line(self, note: bool = False) -> None:
        """End the line the output left open on a terminal, so that what comes next there starts
        a line of its own, its styles reset. With `note` (the CLI writes a line on stderr next: a
        platform's note, the run's end), an open stderr line is ended when piped too. Piped
        stdout never gets a byte the run did not write."""
        for text in self.texts.values():
            text.end()
        if self.open is None:
            return
        shown = console if self.open is sys.stdout else err_console
        if shown.is_terminal or (note and self.open is sys.stderr):
            self.open.write("\n")
            self.open.flush()
        self.open = None


def stream(
    client: Transport, run_id: str, show_log: bool = True, note_follows: bool = False
) -> dict[str, Any]:
    """Print the run's output as it comes until the run ends, ending a line it left open (see
    `_Printer.end_line`; `note_follows`: the caller prints a line on stderr next); return the
    ended run."""
    printer = _Printer(show_log)
    try:
        last = follow_output(client, run_id, printer)
    except ServerUnreachable:  # the server went (follow.lost_server): its sentence on a line of its own
        printer.end_line(note=True)
        raise
    printer.end_line(note=note_follows)
    # The answer that saw the end carries the run; a server before that is asked for it.
    ended: dict[str, Any] = last.get("run") or client.get(f"/v1/runs/{segment(run_id)}")
    return ended


def _collect(client: Transport, run_id: str, wait: float = 0) -> dict[str, str]:
    """The whole stdout and stderr of an ended run; with `wait`, of a run followed to its end."""
    out: dict[str, list[str]] = {"stdout": [], "stderr": [], "log": []}
    follow_output(client, run_id, lambda stream, text: out[stream].append(text), wait=wait)
    return {"stdout": "".join(out["stdout"]), "stderr": "".join(out["stderr"])}


def _interrupted(client: Transport, run_id: str, json_: bool, *, unseen: bool = False) -> NoReturn:
    """Ctrl-C once the run exists: it is cancelled and said (`Cancelled run_…`), 130, as for any
    command Ctrl-C ends; with `json_`, the cancelled run is printed (`_cancelled`). A run that
    ended as Ctrl-C came has nothing to cancel, and that is said instead.

    `unseen`: Ctrl-C cut the create short before its answer was read, so the run may exist
    without anyone but this command knowing its id (chosen here, `run`). It is cancelled the
    same way; a run the server never made (404) is Ctrl-C anywhere else, `Interrupted.`, and a
    cancel that fails names the run, for the caller to cancel it."""
    try:
        client.post(f"/v1/runs/{segment(run_id)}/cancel")
    except Conflict:  # the server's answer for a run that has ended
        err_console.print(f"Interrupted; {run_id} had already ended.")
    except OrchError as e:
        if not unseen:
            raise
        if isinstance(e, NotFound):
            err_console.print("Interrupted.")
        else:
            err_console.print(
                f"Interrupted, but the run the create may have queued ({run_id}) could not be "
                f"cancelled: {escape(e.message)} Cancel it with `orch runs cancel {run_id}`.",
                soft_wrap=True,
            )
        raise typer.Exit(130) from None
    else:
        err_console.print(f"Cancelled {run_id}.")
    if json_:
        print_json(_cancelled(client, run_id))
    raise typer.Exit(130) from None


def _lost(client: Transport, run_id: str, cut: ServerUnreachable) -> NoReturn:
    """The connection broke or timed out before the create's answer was read: the server may
    have queued the run, whose id nobody but this command knows. It is cancelled by that id, and
    what became of it is said after the error (nothing when the run was never made, or when the
    request never reached the server: it could not connect)."""
    report(cut)
    if not cut.never_sent:
        try:
            client.post(f"/v1/runs/{segment(run_id)}/cancel")
        except NotFound:  # never made
            pass
        except Conflict:
            err_console.print(f"  The run it queued ({run_id}) had already ended: `orch runs show {run_id}`.")
        except OrchError:
            err_console.print(
                f"  The run it may have queued ({run_id}) could not be cancelled either: once the "
                f"server answers, `orch runs cancel {run_id}`.",
                soft_wrap=True,
            )
        else:
            err_console.print(f"  Cancelled {run_id}, the run it had queued.")
    raise typer.Exit(cut.exit_code)


def _cancelled(client: Transport, run_id: str) -> dict[str, Any]:
    """The run `--json` prints once Ctrl-C cancelled it: a started run ends when its worker has
    stopped its sandbox, so it is followed to its end (CANCEL_WAIT seconds at most; a second
    Ctrl-C stops waiting), and printed as it then is."""
    output: dict[str, list[str]] = {"stdout": [], "stderr": [], "log": []}
    interrupt.once_more()
    with contextlib.suppress(KeyboardInterrupt):
        follow_output(
            client,
            run_id,
            lambda stream, text: output[stream].append(text),
            deadline=time.monotonic() + CANCEL_WAIT,
        )
    run = client.get(f"/v1/runs/{segment(run_id)}")
    return _run_json(run, {"stdout": "".join(output["stdout"]), "stderr": "".join(output["stderr"])})


def _unread(client: Transport, run_id: str) -> NoReturn:
    """Standard output was closed while the run went on (`orch run AGENT | head -1`): what it
    writes has no reader any more, so it is cancelled, as for Ctrl-C, and said on stderr; the
    command ends as any whose output was closed (output.pipe_closed: 141). A run that had
    already ended (`--json` printed at its end) is left as it is, and nothing is said."""
    if client.get(f"/v1/runs/{segment(run_id)}")["status"] not in FINAL:
        client.post(f"/v1/runs/{segment(run_id)}/cancel")
        with contextlib.suppress(OSError):  # stderr may be the closed pipe too (2>&1 | head)
            err_console.print(f"Cancelled {run_id}: standard output was closed, so its output had no reader.")
    pipe_closed()


def _run_json(run: dict[str, Any], output: dict[str, str]) -> dict[str, Any]:
    """The run as the API has it (every key `runs list --json` has), with its whole output."""
    return {**run, **output}


@command
def run(
    agent: str = typer.Argument(..., help="Agent name or id; its latest version runs."),
    input: str = typer.Option(None, "--input", "-i", help="JSON input, @FILE, or - for standard input."),
    env: list[str] = typer.Option(
        [], "--env", "-e", metavar="KEY=VALUE", help="An environment variable for the sandbox (repeatable)."
    ),
    timeout: int = typer.Option(
        None, "--timeout", "-t", help="Wall-clock limit in seconds \\[default: the manifest's]."
    ),
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Print the run id (with --json, the queued run) and return at once."
    ),
    json_: bool = typer.Option(False, "--json", help="Wait for the end, then print the run as JSON."),
) -> None:
    """Run an agent in a fresh sandbox, streaming its output; exits 0 when the run succeeds."""
    check_name(agent, "orch agents list")  # before any request, as every command taking a name
    client = Transport.from_settings()
    # The id is chosen here, so that a create cut short (Ctrl-C, a connection broken or timed out)
    # can be undone by it even when the server's answer was on its way as the connection closed.
    run_id = new_id("run")
    body = {
        "agent": agent,
        "input": _read_input(input),
        "env": variables(env),
        "timeout": timeout,
        "id": run_id,
    }
    # From the create on, the first Ctrl-C decides, wherever it lands (the run is cancelled:
    # `_interrupted`), and later ones are ignored: `timeout -s INT` signals the command, then
    # its process group, and that second one cut the cancel short with "Interrupted.".
    with interrupt.FirstOnly():
        try:
            created = client.post("/v1/runs", json=body)
        except KeyboardInterrupt:  # --detach too: the caller never got the id
            _interrupted(client, run_id, json_ and not detach, unseen=True)
        except ServerUnreachable as cut:
            _lost(client, run_id, cut)
        run_id = created["id"]  # the answer's word (a server honours the id it was sent)
        if detach:
            if json_:
                print_json(created)
            else:
                console.print(run_id)
            return
        try:
            if json_:
                output = _collect(client, run_id, wait=POLL)
                final = client.get(f"/v1/runs/{segment(run_id)}")
                print_json(_run_json(final, output))
            else:
                err_console.print(
                    f"→ {run_id} · {escape(created['agent'])} v{created['agent_version']}", soft_wrap=True
                )
                final = stream(client, run_id, note_follows=True)
                if final.get("truncated"):  # what was printed is not all the run wrote: say so
                    err_console.print(TRUNCATED, style="dim")
                _finish_line(final)
        except KeyboardInterrupt:
            _interrupted(client, run_id, json_)
        except BrokenPipeError:
            _unread(client, run_id)
    if final["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("list")
@command
def list_(
    agent: str = typer.Option(None, "--agent", "-a", metavar="AGENT", help="Only this agent's runs."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many, newest first (1 to 500)."),
    before: str = typer.Option(
        None, "--before", metavar="RUN", help="Only runs queued before this run (its id): the next page."
    ),
    json_: bool = JSON,
) -> None:
    """List runs, newest first."""
    # The API's own bound (GET /v1/runs?limit=), said in the option's terms. Checked here, not
    # with typer's min/max: a ranged option makes typer import pydantic's validators (~40 ms).
    if not 1 <= limit <= 500:
        raise InvalidInput(f"--limit {limit} is out of range.", "Pass a number from 1 to 500.")
    check_name(agent)  # --agent '' names no agent; it is not every agent's runs
    check_name(before)
    params: dict[str, Any] = {"limit": limit}
    if agent is not None:
        params["agent"] = agent
    if before is not None:
        params["before"] = before
    runs = listed(Transport.from_settings().get("/v1/runs", params=params))
    if json_:
        print_json(runs)
        return
    table = plain_table()
    for col in ("ID", "AGENT", "STATUS", "ENVIRONMENT", "EXIT", "QUEUED"):
        table.add_column(col, key=col not in ("ENVIRONMENT", "QUEUED"))
    for r in runs:
        exit_code = "" if r["exit_code"] is None else str(r["exit_code"])
        table.add_row(
            r["id"],
            f"{r['agent']} v{r['agent_version']}",
            r["status"],
            _env_text(r).removeprefix("environment "),
            exit_code,
            r["queued_at"][:19],
        )
    console.print(table)


@app.command()
@command
def show(run_id: str = typer.Argument(..., metavar="RUN", help="Run id."), json_: bool = JSON) -> None:
    """Show a run: status, environment and why it was chosen, exit code, reason."""
    client = Transport.from_settings()
    r = client.get(f"/v1/runs/{segment(run_id)}")
    if json_:
        print_json(_run_json(r, _collect(client, r["id"])) if r["status"] in FINAL else r)
        return
    console.print(f"[bold]{r['id']}[/bold]  {escape(r['agent'])} v{r['agent_version']}")
    console.print(f"  status       {escape(_untrusted(_summary(r), console))}")
    if r["environment"]["name"]:
        console.print(f"  environment  {escape(r['environment']['name'])} ({r['environment_rule']})")
    console.print(f"  dependencies {r['deps']}")
    if usage := r.get("usage"):  # a managed loop's
        calls = usage["model_calls"]
        console.print(
            f"  usage        {calls} model call{'' if calls == 1 else 's'} · "
            f"{usage['input_tokens']} tokens in, {usage['output_tokens']} out"
        )
    console.print(f"  queued       {r['queued_at'][:19]}")


@app.command()
@command
def logs(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the run ends."),
) -> None:
    """Print a run's output: the agent's stdout and stderr, and the platform's notes (dimmed)."""
    client = Transport.from_settings()
    if follow:
        stream(client, run_id)
        return
    printer = _Printer(show_log=True)
    last = follow_output(client, run_id, printer, wait=0)
    printer.end_line(note=bool(last.get("truncated")))
    if last.get("truncated"):
        err_console.print(TRUNCATED, style="dim")


def _event_line(event: dict[str, Any]) -> str:
    """An event as the transcript's line; a final event as the answer."""
    if event["type"] == "final":
        cut = (
            "\n(the answer was cut at the 1 MiB limit, as the run's stdout was)"
            if event.get("truncated")
            else ""
        )
        return str(event.get("text") or "") + cut
    return transcript_line(event["type"], event)


def _is_loop(client: Transport, run: dict[str, Any]) -> bool:
    """Whether `run` is a managed loop's (a run with model calls is; else its version's manifest
    says)."""
    if run.get("usage"):
        return True
    agent = client.get(f"/v1/agents/{segment(run['agent'])}")
    version = next((v for v in agent.get("versions") or () if v["version"] == run["agent_version"]), None)
    return version is None or bool(version["manifest"].get("loop"))


@app.command()
@command
def events(
    run_id: str = typer.Argument(..., metavar="RUN", help="Run id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the run ends."),
    json_: bool = JSON,
) -> None:
    """Print a managed loop's events: model calls, tools and results, the answer, the end.

    With --json, the list of events ({seq, type, at, ...}); with -f too, one event per line."""
    client = Transport.from_settings()
    run = client.get(f"/v1/runs/{segment(run_id)}")
    if not _is_loop(client, run):
        if json_ and not follow:
            print_json([])
        err_console.print(
            f"{run['id']} is a run of a code agent: only a managed loop's runs have events. "
            f"`orch runs logs {run['id']}` prints its output.",
            markup=False,
            soft_wrap=True,
        )
        return
    found: list[dict[str, Any]] = []
    for page in event_pages(client, run["id"], follow=follow):
        if json_ and not follow:
            found.extend(page)
            continue
        for event in page:
            if json_:  # followed: one object per line, as they come
                sys.stdout.write(json.dumps(event) + "\n")
            elif line := _event_line(event):
                console.print(_untrusted(line, console), markup=False, soft_wrap=True)
        sys.stdout.flush()
    if json_:
        if not follow:
            print_json(found)
        return
    run = client.get(f"/v1/runs/{segment(run['id'])}")
    if run["status"] in FINAL:
        _finish_line(run, console)
    else:
        console.print(
            f"… {run['status']}: more may come (`orch runs events {run['id']} -f` follows them).",
            markup=False,
            soft_wrap=True,
        )


@app.command()
@command
def cancel(run_id: str = typer.Argument(..., metavar="RUN", help="Run id.")) -> None:
    """Cancel a run: at once if queued, else its sandbox is stopped."""
    client = Transport.from_settings()
    client.post(f"/v1/runs/{segment(run_id)}/cancel")
    deadline = time.monotonic() + 30
    while (r := client.get(f"/v1/runs/{segment(run_id)}"))[
        "status"
    ] not in FINAL and time.monotonic() < deadline:
        time.sleep(0.3)
    err_console.print(f"{r['id']}: {escape(_untrusted(_summary(r), err_console))}")
