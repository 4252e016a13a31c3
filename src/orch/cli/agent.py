"""`orch publish` and `orch agents`: publish bundles, list, inspect and delete agents."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from orch.cli.env import follow_build, print_findings
from orch.cli.output import command, console, err_console, escape, ok, print_json, warn
from orch.cli.terminal_text import shown
from orch.cli.utils import JSON, confirm_delete, packed, plain_table
from orch.client.transport import Transport, listed, segment
from orch.errors import Conflict, InvalidDockerfile, NotFound
from orch.sizes import format_size

app = typer.Typer(help="Agents: published bundles of code that runs in sandboxes.", no_args_is_help=True)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@command
def publish(
    path: Path = typer.Argument(Path("."), help="The agent's directory (default: the current one)."),
    docker: bool = typer.Option(
        False, "--docker", help="Build the bundle's Dockerfile into the agent's own environment."
    ),
    name: str = typer.Option(
        None, "--name", "-n", help="Agent name \\[default: orch.yaml's name, else the directory's]."
    ),
    detach: bool = typer.Option(False, "--detach", "-d", help="Do not wait for the Dockerfile's build."),
    json_: bool = JSON,
) -> None:
    """Publish a directory as a new immutable version of an agent."""
    agent_name, bundle = packed(path, name, "agent", "orch publish ./my-agent")
    client = Transport.from_settings()
    # As long as the server takes: a large bundle's upload and fit check can outlast the usual
    # limit, and a publish given up on is published all the same.
    with dockerfile_rejected(json_, "nothing was published"):
        data = client.post(
            f"/v1/agents/{segment(agent_name)}/versions",
            params={"docker": "true" if docker else "false"},
            content=bundle.data,
            headers={"Content-Type": "application/gzip"},
            timeout=client.waiting(None),
        )
    version = data["version"]
    if json_:
        print_json(data)
        return
    ok(
        f"Published {data['agent']['name']} v{version['version']} · {escape(_program(version))} · "
        f"{_plural(len(bundle.files), 'file')}, {format_size(sum(f.size for f in bundle.files))}"
    )
    for note in data["notes"]:
        warn(note)
    deps = version["dependency_files"]
    if deps:
        console.print(f"  dependencies: {', '.join(deps)} (installed on the first run, then cached)")
    env = version["dockerfile_environment"]
    if env:
        console.print(f"  environment: {env['name']} ({env['id']}), built from the bundle's Dockerfile")
        state = client.get(f"/v1/environments/{segment(env['id'])}")
        if state["status"] not in ("ready", "failed") and not detach:
            state = follow_build(client, env["id"], logs=False)
        if state["status"] == "ready":
            ok(f"Environment {env['name']} is ready")
        elif state["status"] == "failed":  # published, but it can't run: the operation failed
            err_console.print(
                f"[red]✗[/red] Environment {escape(env['name'])} failed to build: "
                f"{escape(shown(str(state.get('error')), err_console.is_terminal))}\n"
                f"  See `orch env status {env['name']}`; fix the "
                "Dockerfile and publish again.",
                soft_wrap=True,
            )
            raise typer.Exit(1)
    elif version["pinned_environment"]:
        console.print(f"  environment: {version['pinned_environment']} (pinned in orch.yaml)")
    else:
        console.print("  environment: the workspace default, else the base image (chosen at each run)")


_FINDING_KEYS = frozenset({"line", "instruction", "severity", "message", "fix"})


@contextlib.contextmanager
def dockerfile_rejected(json_: bool, nothing: str) -> Iterator[None]:
    """A bundle's Dockerfile the server rejected, said with all its findings as `orch env create`
    says them (the error's message names the first error only, and fixing one at a time took a
    deploy for each), then `nothing` (what was not done); with --json, the error and its
    findings on stdout. Exit 2. `orch service deploy` says it so too."""
    try:
        yield
    except InvalidDockerfile as e:
        findings = e.details.get("findings")
        known = isinstance(findings, list) and all(
            isinstance(f, dict) and f.keys() >= _FINDING_KEYS for f in findings
        )
        if not known or not findings:  # the error's own message says it
            raise
        if json_:
            print_json(e.to_dict())
        else:
            errors = _plural(sum(1 for f in findings if f["severity"] == "error"), "error")
            err_console.print(f"[red]✗[/red] The bundle's Dockerfile was rejected ({errors}); {nothing}.")
            print_findings(findings, err_console)
        raise typer.Exit(2) from None


def _program(v: dict[str, Any]) -> str:
    """What runs: a managed loop's model (its entrypoint, if any, is not run), else the
    entrypoint and its language."""
    if loop := (v.get("manifest") or {}).get("loop"):
        # A model's name is the author's text, and one published before control characters were
        # refused may hold them: shown on a terminal as a run's output is.
        return f"loop ({shown(str(loop['model']), console.is_terminal)} via {loop['provider']})"
    return f"{v['entrypoint']} ({v['language']})"


def _environment(v: dict[str, Any]) -> str:
    if v["dockerfile_environment"]:
        return f"{v['dockerfile_environment']['name']} (dockerfile)"
    if v["pinned_environment"]:
        return f"{v['pinned_environment']} (pinned)"
    return "default"


@app.command("list")
@command
def list_(json_: bool = JSON) -> None:
    """List the workspace's agents with their latest version."""
    agents = listed(Transport.from_settings().get("/v1/agents"))
    if json_:
        print_json(agents)
        return
    table = plain_table()
    for col in ("NAME", "VERSION", "ENTRYPOINT", "ENVIRONMENT", "PUBLISHED"):
        table.add_column(col, key=col in ("NAME", "VERSION"))
    for a in agents:
        v = a["latest"]
        table.add_row(
            a["name"],
            f"v{v['version']}",
            escape(_program(v)),
            _environment(v),
            v["created_at"][:19],
        )
    console.print(table)


@app.command()
@command
def show(agent: str = typer.Argument(..., help="Agent name or id."), json_: bool = JSON) -> None:
    """Show an agent and its versions."""
    a = Transport.from_settings().get(f"/v1/agents/{segment(agent)}")
    if json_:
        print_json(a)
        return
    v = a["latest"]
    console.print(f"[bold]{escape(a['name'])}[/bold]  {a['id']}  latest v{v['version']}")
    runs = "" if (v.get("manifest") or {}).get("loop") else f": {' '.join(v['command'])}"
    console.print(f"  entrypoint   {escape(_program(v) + runs)}")
    console.print(f"  environment  {escape(_environment(v))}")
    console.print(f"  dependencies {', '.join(v['dependency_files']) or 'none'}")
    console.print("  versions")
    for old in a.get("versions") or []:
        console.print(
            f"    v{old['version']}  {old['created_at'][:19]}  "
            f"{old['bundle_sha256'][:12]}  {format_size(old['bundle_size'])}"
        )


# The most runs the API lists at once: past that, the confirmation says "or more".
RUNS_LISTED = 500


@app.command()
@command
def delete(
    agent: str = typer.Argument(..., help="Agent name or id."),
    version: int | None = typer.Option(None, "--version", help="Delete only this version (its number)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_: bool = JSON,
) -> None:
    """Delete an agent with all its versions and past runs, or one version with --version.

    Refused while a run of it has not ended."""
    client = Transport.from_settings()
    a = client.get(f"/v1/agents/{segment(agent)}")
    runs = listed(client.get("/v1/runs", params={"agent": a["id"], "limit": RUNS_LISTED}))
    if version is None:
        what = f"agent {a['name']} ({a['id']}), its {_plural(len(a['versions']), 'version')}"
        path = f"/v1/agents/{segment(a['id'])}"
    else:
        if not any(v["version"] == version for v in a["versions"]):
            raise NotFound(
                f"{a['name']} has no version {version}.",
                f"Run `orch agents show {a['name']}` to see its versions.",
            )
        what = f"{a['name']} v{version}"
        path = f"/v1/agents/{segment(a['id'])}/versions/{segment(version)}"
        runs = [r for r in runs if r["agent_version"] == version]
    if not yes:
        more = " or more" if len(runs) >= RUNS_LISTED else ""
        past = f"{_plural(len(runs), 'past run')}{more} (with their output)" if runs else "no past runs"
        confirm_delete(f"Delete {what}, and {past}?", what)
    try:
        data = client.delete(path)
    except Conflict as e:
        if e.details.get("unfinished_runs"):  # the server's fix says what; the CLI adds how
            e.fix = f"{e.fix} `orch runs cancel RUN` cancels one."
        raise
    if json_:
        print_json(data)
        return
    runs_gone = _plural(data["deleted_runs"], "past run")
    if version is None:
        versions_gone = _plural(len(data["deleted_versions"]), "version")
        ok(f"Deleted {data['agent']} ({data['id']}): {versions_gone} and {runs_gone}.")
    else:
        ok(f"Deleted {data['agent']} v{version} and {runs_gone}.")
        console.print(f"  latest version: v{data['latest_version']} (what `orch run {data['agent']}` runs)")
    for note in data.get("notes", []):
        warn(note)
    for env in data["unused_environments"]:
        console.print(
            f"  environment {env}, built from its Dockerfile, is no longer used by any agent: "
            f"`orch env delete {env}` removes it"
        )
