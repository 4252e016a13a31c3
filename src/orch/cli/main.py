"""The `orch` entry point: registers one sub-command module per noun."""

from __future__ import annotations

import typer

from orch.cli import admin, agent, env, server, service, workspace
from orch.cli import run as run_cmd
from orch.cli.output import err_console

app = typer.Typer(
    name="orch",
    help="Run AI agents in isolated sandboxes, in environments your workspace shapes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(env.app, name="env")
app.add_typer(agent.app, name="agents")
app.add_typer(run_cmd.app, name="runs")
app.add_typer(service.app, name="service")
app.add_typer(admin.app, name="admin")
app.add_typer(workspace.workspace_app, name="workspace")
app.add_typer(workspace.token_app, name="token")
app.command("publish")(agent.publish)
app.command("run")(run_cmd.run)
app.command("server")(server.server)
app.command("login")(server.login)


def main() -> None:
    try:
        app()
    except Exception as e:  # noqa: BLE001 - a bug: still one sentence, never a traceback
        err_console.print(f"✗ orch failed unexpectedly ({type(e).__name__}: {e}).", markup=False)
        err_console.print("  This is a bug; please report it with the command you ran.", markup=False)
        raise SystemExit(1) from None
