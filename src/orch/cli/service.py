"""`orch service`: deploy bundles as always-on services, and watch and manage them."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer

from orch.cli import interrupt
from orch.cli.agent import dockerfile_rejected
from orch.cli.output import command, console, err_console, escape, ok, print_json, warn
from orch.cli.terminal_text import TerminalText, shown
from orch.cli.utils import JSON, confirm_delete, following, packed, plain_table
from orch.client.transport import Transport, listed, segment
from orch.errors import OrchError

app = typer.Typer(help="Services: bundles that run always-on, reachable over HTTP.", no_args_is_help=True)

FINAL = {"ready", "failed"}


def _json(svc: dict[str, Any]) -> dict[str, Any]:
    """The keys docs/cli.md ("JSON output") promises first ({name, state, url, restarts}), then
    the rest, and the URL's path."""
    return {
        "name": svc["name"],
        "state": svc["state"],
        "url": svc["url"],
        "restarts": svc["restarts"],
        **{k: v for k, v in svc.items() if k not in ("name", "state", "url", "restarts")},
        "path": urlsplit(svc["url"]).path,
    }


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _replicas(svc: dict[str, Any]) -> str:
    """Replicas that serve, of those wanted: 2/3."""
    serving = sum(r["state"] == "running" for r in svc["replicas"])
    return f"{serving}/{svc['desired_replicas']}"


def _access(svc: dict[str, Any]) -> str:
    return "public" if svc.get("public") else "private"


@command
def deploy(
    path: Path = typer.Argument(Path("."), help="The service's directory (default: the current one)."),
    name: str = typer.Option(
        None, "--name", "-n", help="Service name \\[default: orch.yaml's name, else the directory's]."
    ),
    command_: str = typer.Option(
        None, "--command", "-c", help="Command \\[default: orch.yaml's runtime.command or the entrypoint's]."
    ),
    detach: bool = typer.Option(False, "--detach", "-d", help="Do not wait for the deployment."),
    public: bool = typer.Option(
        False, "--public", help="Answer anyone, without a token (as `public: true` in orch.yaml)."
    ),
    json_: bool = JSON,
) -> None:
    """Deploy a directory as a service's next version; the old one serves until the new one answers."""
    from orch.services.service_rules import check_command  # light, but not for every command's start

    check_command(command_)  # before anything is packed or sent: the server refuses it too
    _refuse_loop(path)
    service, bundle = packed(path, name, "service", "orch service deploy ./api")
    client = Transport.from_settings()
    params: dict[str, str] = {"command": command_} if command_ is not None else {}
    if public:
        params["public"] = "true"
    with dockerfile_rejected(json_, "nothing was deployed"):
        dep = client.post(  # as long as the server takes, as `orch publish`
            f"/v1/services/{segment(service)}/deploy",
            params=params,
            content=bundle.data,
            headers={"Content-Type": "application/gzip"},
            timeout=client.waiting(None),
        )
    if dep.get("unchanged"):
        svc = client.get(f"/v1/services/{segment(service)}")
        if json_:
            print_json({**_json(svc), "deployment": dep})
        else:
            ok(f"{service} unchanged, still v{dep['version']}, at {svc['url']}")
        return
    if not json_:
        access = "public" if dep["public"] else "private"
        err_console.print(
            f"→ {escape(service)} v{dep['version']} · {escape(shlex.join(dep['command']))} · {access}"
        )
        for note in dep["notes"]:
            warn(note)
        if dep["dependency_files"]:
            files = ", ".join(dep["dependency_files"])
            err_console.print(f"  dependencies: {files} (installed into its image)")
    if detach:
        if json_:
            print_json(dep)
        return
    # The version is stored: a server that goes meanwhile leaves what serves serving (services
    # outlive it), and a stop queues the deployment again (workers/deploys.py).
    fix = (
        f"v{dep['version']} was uploaded, and its deployment is kept: it goes on, or, if the server "
        "stopped, goes on once it is back; what serves now keeps serving. Once the server answers, "
        f"`orch service status {service}` shows how it went."
    )
    with following(f"the deployment of {service} v{dep['version']}", fix):
        while dep["status"] not in FINAL:
            time.sleep(0.5)
            dep = client.get(f"/v1/services/{segment(service)}/deployments/{segment(dep['version'])}")
        svc = client.get(f"/v1/services/{segment(service)}")
    if json_:
        print_json({**_json(svc), "deployment": dep})
    elif dep["status"] == "ready" and svc["desired"] == "stopped":
        ok(
            f"{service} v{dep['version']} is deployed, and stopped: it was stopped during the "
            f"deployment. `orch service restart {service}` starts it."
        )
    elif dep["status"] == "ready":
        ok(f"{service} v{dep['version']} is running at {svc['url']}")
    if dep["status"] != "ready":
        if not json_:
            # The build's output, and an error that quotes it or the service's: made safe on a
            # terminal (cli/terminal_text.py).
            terminal = err_console.is_terminal
            why = escape(shown(dep["error"] or "the deployment failed", terminal))
            if dep["log_tail"] and (dep["error"] or "").startswith("Building"):  # the log, then why it ended
                err_console.print(escape(shown(dep["log_tail"], terminal)), style="dim", soft_wrap=True)
            err_console.print(f"[red]✗[/red] {why}", soft_wrap=True)
            if svc["version"]:
                err_console.print(f"  {service} v{svc['version']} still serves.")
        raise typer.Exit(1)


def _refuse_loop(path: Path) -> None:
    """A `loop:` section in the directory's manifest is refused first, as the server does (the
    packing would check its settings as an agent's, for nothing)."""
    from orch.bundle import parse_manifest
    from orch.cli.utils import manifest_text
    from orch.services.service_rules import LOOP_REFUSED

    for filename in ("orch.yaml", "orch.yml"):
        found = path / filename
        if found.is_file():
            parse_manifest(manifest_text(found), filename, loop_refused=LOOP_REFUSED)
            return


@app.command("list")
@command
def list_(json_: bool = JSON) -> None:
    """List the workspace's services."""
    client = Transport.from_settings()
    services = listed(client.get("/v1/services"))
    if json_:
        print_json([_json(s) for s in services])
        return
    table = plain_table()
    for col in ("NAME", "STATE", "VERSION", "REPLICAS", "UPTIME", "RESTARTS", "ACCESS", "URL"):
        table.add_column(col, key=col != "URL")
    for s in services:
        table.add_row(
            s["name"],
            s["state"],
            f"v{s['version']}" if s["version"] else "-",  # none deployed yet (its first deploy failed)
            _replicas(s),
            _uptime(s["uptime"]),
            str(s["restarts"]),
            _access(s),
            s["url"],
        )
    console.print(table)


@app.command()
@command
def status(name: str = typer.Argument(..., help="Service name or id."), json_: bool = JSON) -> None:
    """Show a service: state, uptime, restarts, image, URL, and its last output after a crash."""
    client = Transport.from_settings()
    s = client.get(f"/v1/services/{segment(name)}")
    if json_:
        print_json(_json(s))
        return
    version = f"v{s['version']}" if s["version"] else "no version deployed"
    console.print(f"[bold]{escape(s['name'])}[/bold]  {s['id']}  {version}")
    stopped = " (stopped by request)" if s["desired"] == "stopped" else ""
    console.print(f"  state     {s['state']}{stopped}")
    console.print(f"  uptime    {_uptime(s['uptime'])}")
    if s.get("node"):
        console.print(f"  node      {escape(s['node'])}")
    console.print(f"  replicas  {_replicas(s)}")
    if len(s["replicas"]) > 1 or any(r["state"] != "running" for r in s["replicas"]):
        for r in s["replicas"]:
            console.print(f"    {r['slot']}  {r['state']:<13} v{r['version']}  {r['container'] or '-'}")
    last = f" · last exit {s['last_exit']}" if s["last_exit"] is not None else ""
    console.print(f"  restarts  {s['restarts']}{last}")
    console.print(f"  image     {s['image'] or '-'}")
    console.print(f"  command   {escape(shlex.join(s['command'])) or '-'}")
    if s["run_command"]:
        console.print(f"  run       {escape(s['run_command'])}")
    console.print(f"  url       {s['url']}")
    console.print(f"  access    {_access(s)}")
    dep = s.get("deployment")
    error = s["error"]
    if dep and dep["status"] not in ("ready",):
        why = f": {escape(shown(dep['error'], console.is_terminal))}" if dep["error"] else ""
        console.print(f"  deploy    v{dep['version']} {dep['status']}{why}")
        if error == f"v{dep['version']} was not deployed: {dep['error']}":
            error = None  # said on the line above
    if error:  # it may quote the service's own output: made safe as `service logs` makes it
        warn(escape(shown(error, console.is_terminal)))
    if s["last_output"] and s["state"] in ("crash-looping", "restarting", "failed"):
        console.print("  last output:")
        last = shown(s["last_output"].rstrip(), console.is_terminal)
        console.print(escape(last), style="dim", soft_wrap=True)


@app.command()
@command
def logs(
    name: str = typer.Argument(..., help="Service name or id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output (Ctrl-C stops)."),
) -> None:
    """Print the service's output (every container's, oldest first)."""
    client = Transport.from_settings()
    offset = 0
    shown = TerminalText(sys.stdout, console.is_terminal)  # see cli/terminal_text.py
    # Following, Ctrl-C is how it ends: 0, whatever another Ctrl-C a moment later does.
    with interrupt.FirstOnly() if follow else contextlib.nullcontext():
        try:
            while True:
                params = {"offset": offset, "wait": 10 if follow else 0}
                chunk = client.get(f"/v1/services/{segment(name)}/logs", params=params)
                shown.write(chunk["text"])
                sys.stdout.flush()
                offset = chunk["offset"]
                if not follow and not chunk["text"]:
                    return
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
        finally:
            shown.end()


@app.command()
@command
def restart(name: str = typer.Argument(..., help="Service name or id.")) -> None:
    """Restart a service: a new container for each replica, one at a time (a stopped one starts)."""
    client = Transport.from_settings()
    s = client.post(f"/v1/services/{segment(name)}/restart", timeout=client.waiting(None))
    ok(f"{s['name']} restarted ({s['state']}).")


@app.command()
@command
def stop(name: str = typer.Argument(..., help="Service name or id.")) -> None:
    """Stop a service; it stays stopped (server restarts too) until `orch service restart`."""
    client = Transport.from_settings()
    s = client.post(f"/v1/services/{segment(name)}/stop", timeout=client.waiting(None))
    dep = s.get("deployment")
    if dep and dep["status"] not in FINAL:
        ok(
            f"{s['name']} stopped. Its deployment of v{dep['version']} goes on and leaves it stopped; "
            f"`orch service restart {s['name']}` starts it."
        )
    else:
        ok(f"{s['name']} stopped.")


@app.command()
@command
def delete(
    name: str = typer.Argument(..., help="Service name or id."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a service: its container, images and logs."""
    client = Transport.from_settings()
    s = client.get(f"/v1/services/{segment(name)}")
    if not yes:
        confirm_delete(f"Delete service {s['name']} ({s['id']})?", s["name"])
    client.delete(f"/v1/services/{segment(s['id'])}", timeout=client.waiting(None))
    ok(f"Deleted {s['name']}.")


app.command("deploy")(deploy)

__all__ = ["OrchError", "app"]
