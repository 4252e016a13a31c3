"""`orch run` and `orch runs`: run agents in fresh sandboxes, follow and inspect runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from orch.cli.client import Client
from orch.cli.output import command, console, err_console, print_json
from orch.cli.utils import JSON, plain_table
from orch.errors import InvalidInput

app = typer.Typer(help="Runs: one execution of an agent in a fresh sandbox.", no_args_is_help=True)

FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def _read_input(value: str | None) -> str:
    if value is None:
        return ""
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8-sig")
        except OSError as e:
            raise InvalidInput(
                f"Cannot read the input file {value[1:]!r}: {e.strerror}.",
                "Pass --input @FILE with a readable file.",
            ) from None
    else:
        text = value
    try:
        json.loads(text)
    except ValueError as e:
        raise InvalidInput(
            f"The input is not valid JSON ({e}).",
            'Pass JSON, e.g. --input \'{"url": "https://example.org"}\', or --input @file.json.',
        ) from None
    return text


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--env {pair!r} is not KEY=VALUE.", "Pass e.g. --env LOG_LEVEL=debug.")
        env[key] = value
    return env


def _env_text(run: dict[str, Any]) -> str:
    env = run["environment"]
    if not env["name"]:
        return ""
    rule = (run["environment_rule"] or "").replace("-", " ")
    return f"environment {env['name']} ({rule})"


def _summary(run: dict[str, Any]) -> str:
    took = f" in {run['duration']:.1f} s" if run.get("duration") is not None else ""
    exit_text = f" · exit {run['exit_code']}" if run["exit_code"] is not None else ""
    reason = f" · {run['reason']}" if run.get("reason") and run["status"] != "succeeded" else ""
    return f"{run['status'].replace('_', ' ')}{took}{exit_text}{reason}"


def _finish_line(run: dict[str, Any]) -> None:
    mark = "[green]✓[/green]" if run["status"] == "succeeded" else "[red]✗[/red]"
    err_console.print(f"{mark} {escape(_summary(run))}", soft_wrap=True)


def stream(client: Client, run_id: str, show_log: bool = True) -> dict[str, Any]:
    """Print the run's output as it comes (stdout to stdout, the rest to stderr) until it ends."""
    offsets = {"stdout": 0, "stderr": 0, "log": 0}
    while True:
        chunk = client.get(f"/v1/runs/{run_id}/logs", params={**offsets, "wait": 10})
        offsets = chunk["offsets"]
        if show_log and chunk["log"]:
            for line in chunk["log"].splitlines():
                err_console.print(escape(line), style="dim", soft_wrap=True)
        if chunk["stdout"]:
            sys.stdout.write(chunk["stdout"])
            sys.stdout.flush()
        if chunk["stderr"]:
            sys.stderr.write(chunk["stderr"])
            sys.stderr.flush()
        if chunk["status"] in FINAL and not (chunk["stdout"] or chunk["stderr"] or chunk["log"]):
            return dict(client.get(f"/v1/runs/{run_id}"))


def _collect(client: Client, run_id: str) -> dict[str, str]:
    """The whole stdout and stderr of an ended run."""
    offsets = {"stdout": 0, "stderr": 0, "log": 0}
    out = {"stdout": "", "stderr": ""}
    while True:
        chunk = client.get(f"/v1/runs/{run_id}/logs", params=offsets)
        if not (chunk["stdout"] or chunk["stderr"] or chunk["log"]):
            return out
        out["stdout"] += chunk["stdout"]
        out["stderr"] += chunk["stderr"]
        offsets = chunk["offsets"]


def _run_json(client: Client, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": run["id"],
        "agent": run["agent"],
        "status": run["status"],
        "exit_code": run["exit_code"],
        "reason": run["reason"],
        "environment": run["environment"],
        "environment_rule": run["environment_rule"],
        "isolation": run.get("isolation"),
        "deps": run["deps"],
        "duration": run["duration"],
        **_collect(client, run["id"]),
    }


@command
def run(
    agent: str = typer.Argument(..., help="Agent name or id; its latest version runs."),
    input: str = typer.Option(None, "--input", "-i", help="JSON input, @FILE, or - for standard input."),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for the sandbox (repeatable)."),
    timeout: int = typer.Option(
        None, "--timeout", "-t", help="Wall-clock limit in seconds [default: the manifest's]."
    ),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the run id and return at once."),
    json_: bool = typer.Option(False, "--json", help="Wait for the end, then print the run as JSON."),
) -> None:
    """Run an agent in a fresh sandbox, streaming its output; exits 0 when the run succeeds."""
    client = Client.from_settings()
    body = {"agent": agent, "input": _read_input(input), "env": _parse_env(env), "timeout": timeout}
    created = client.post("/v1/runs", json=body)
    run_id = created["id"]
    if detach:
        console.print(run_id)
        return
    try:
        if json_:
            while (final := client.get(f"/v1/runs/{run_id}"))["status"] not in FINAL:
                client.get(
                    f"/v1/runs/{run_id}/logs",
                    params={"log": 1 << 40, "stdout": 1 << 40, "stderr": 1 << 40, "wait": 10},
                )
            print_json(_run_json(client, final))
        else:
            err_console.print(
                f"→ {run_id} · {escape(created['agent'])} v{created['agent_version']}", soft_wrap=True
            )
            final = stream(client, run_id)
            _finish_line(final)
    except KeyboardInterrupt:
        client.post(f"/v1/runs/{run_id}/cancel")
        err_console.print(f"Cancelled {run_id}.")
        raise typer.Exit(130) from None
    if final["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("list")
@command
def list_(
    agent: str = typer.Option(None, "--agent", "-a", help="Only this agent's runs."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many, newest first."),
    json_: bool = JSON,
) -> None:
    """List runs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if agent:
        params["agent"] = agent
    runs = Client.from_settings().get("/v1/runs", params=params)
    if json_:
        print_json(runs)
        return
    table = plain_table()
    for col in ("ID", "AGENT", "STATUS", "ENVIRONMENT", "EXIT", "QUEUED"):
        table.add_column(col, no_wrap=True)
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
def show(run_id: str = typer.Argument(..., help="Run id."), json_: bool = JSON) -> None:
    """Show a run: status, environment and why it was chosen, exit code, reason."""
    client = Client.from_settings()
    r = client.get(f"/v1/runs/{run_id}")
    if json_:
        print_json(_run_json(client, r) if r["status"] in FINAL else r)
        return
    console.print(f"[bold]{r['id']}[/bold]  {escape(r['agent'])} v{r['agent_version']}")
    console.print(f"  status       {escape(_summary(r))}")
    if r["environment"]["name"]:
        console.print(f"  environment  {escape(r['environment']['name'])} ({r['environment_rule']})")
    console.print(f"  dependencies {r['deps']}")
    console.print(f"  queued       {r['queued_at'][:19]}")


@app.command()
@command
def logs(
    run_id: str = typer.Argument(..., help="Run id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming until the run ends."),
) -> None:
    """Print a run's output: the agent's stdout and stderr, and the platform's notes (dimmed)."""
    client = Client.from_settings()
    if follow:
        stream(client, run_id)
        return
    offsets = {"stdout": 0, "stderr": 0, "log": 0}
    while True:
        chunk = client.get(f"/v1/runs/{run_id}/logs", params=offsets)
        if not (chunk["stdout"] or chunk["stderr"] or chunk["log"]):
            break
        for line in chunk["log"].splitlines():
            err_console.print(escape(line), style="dim", soft_wrap=True)
        sys.stdout.write(chunk["stdout"])
        sys.stderr.write(chunk["stderr"])
        offsets = chunk["offsets"]
    if chunk.get("truncated"):
        err_console.print("(output was cut at the 1 MiB limit per stream)", style="dim")


@app.command()
@command
def cancel(run_id: str = typer.Argument(..., help="Run id.")) -> None:
    """Cancel a run: at once if queued, else its sandbox is stopped."""
    client = Client.from_settings()
    client.post(f"/v1/runs/{run_id}/cancel")
    deadline = time.monotonic() + 30
    while (r := client.get(f"/v1/runs/{run_id}"))["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(0.3)
    err_console.print(f"{r['id']}: {escape(_summary(r))}")
