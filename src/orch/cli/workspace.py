"""`orch workspace` and `orch token`: tenants and their API tokens (see docs/workspaces.md)."""

from __future__ import annotations

from typing import Any

import typer

from orch.cli.output import command, console, err_console, escape, ok, print_json
from orch.cli.utils import JSON, confirm_delete, plain_table
from orch.client.transport import Transport, check_name, listed, segment

workspace_app = typer.Typer(help="Workspaces: tenants, each with its own everything.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens of workspaces (shown once, stored hashed).", no_args_is_help=True)


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = plain_table()
    for col in columns:
        table.add_column(col, key=col != "CREATED")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


def _show_token_once(token: str) -> None:
    # The token goes alone on stdout, so `$(orch token create)` captures just it; the notes go
    # to stderr.
    console.print(token, markup=False, highlight=False, soft_wrap=True)
    err_console.print("  Shown this once: store it now (the server keeps only its hash).", markup=False)


@workspace_app.command("create")
@command
def create_workspace(
    name: str = typer.Argument(..., help="Workspace name: lower-case letters, digits, '.', '_', '-'."),
    json_: bool = JSON,
) -> None:
    """Create a workspace (admin token) and print its first token, once."""
    data = Transport.from_settings().post("/v1/workspaces", json={"name": name})
    if json_:
        print_json(data)
        return
    err_console.print(f"✓ Created workspace {data['name']} ({data['id']}). Its first token:", markup=False)
    _show_token_once(data["token"])


@workspace_app.command("list")
@command
def list_workspaces(json_: bool = JSON) -> None:
    """List workspaces: every one with an admin token, else your own."""
    data = listed(Transport.from_settings().get("/v1/workspaces"))
    if json_:
        print_json(data)
        return
    _table(("ID", "NAME", "CREATED"), [(w["id"], w["name"], w["created_at"][:19]) for w in data])


@workspace_app.command("delete")
@command
def delete_workspace(
    name: str = typer.Argument(..., help="Workspace name or id."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_: bool = JSON,
) -> None:
    """Delete a workspace and everything of it (admin token).

    Refused for your token's own workspace, and while a run, sandbox, service or build of it
    has not ended."""
    client = Transport.from_settings()
    path = f"/v1/workspaces/{segment(name)}"  # a name that can't be one is refused before asking
    if not yes:
        confirm_delete(
            f"Delete workspace {name} with all its tokens, secrets, agents, runs, environments and services?",
            f"workspace {name}",
        )
    data = client.delete(path)
    if json_:
        print_json(data)
        return
    gone = [
        _plural(data["deleted_tokens"], "token"),
        _plural(data["deleted_secrets"], "secret"),
        f"{_plural(data['deleted_agents'], 'agent')} ({_plural(data['deleted_versions'], 'version')})",
        _plural(data["deleted_runs"], "run"),
        _plural(data["deleted_sandboxes"], "ended sandbox", "ended sandboxes"),
        _plural(data["deleted_services"], "service"),
        _plural(len(data["deleted_environments"]), "environment")
        + (f" ({', '.join(data['deleted_environments'])})" if data["deleted_environments"] else ""),
        _plural(data["deleted_cache_mounts"], "cache mount"),
    ]
    ok(escape(f"Deleted workspace {data['workspace']} ({data['id']}): {', '.join(gone)}."))


def _plural(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


@token_app.command("create")
@command
def create_token(
    workspace: str = typer.Option(
        None, "--workspace", "-w", help="Workspace name or id \\[default: your token's; others: admin only]."
    ),
    name: str = typer.Option("token", "--name", "-n", help="What the token is for, e.g. ci."),
    admin: bool = typer.Option(False, "--admin", help="Make an admin token (admin tokens only)."),
    json_: bool = JSON,
) -> None:
    """Create a token and print it, once."""
    check_name(workspace)  # --workspace '' names no workspace; it is not your token's own
    body: dict[str, Any] = {"name": name, "workspace": workspace, "admin": admin}
    data = Transport.from_settings().post("/v1/tokens", json=body)
    if json_:
        print_json(data)
        return
    kind = "admin token" if data["admin"] else "token"
    err_console.print(
        f"✓ Created {kind} {data['name']} ({data['id']}) for workspace {data['workspace']}:", markup=False
    )
    _show_token_once(data["token"])


@token_app.command("list")
@command
def list_tokens(
    workspace: str = typer.Option(None, "--workspace", "-w", help="Only this workspace's (admin)."),
    json_: bool = JSON,
) -> None:
    """List tokens: ids, names, workspaces, never the tokens themselves."""
    check_name(workspace)  # --workspace '' names no workspace; it is not your token's own
    params = {"workspace": workspace} if workspace is not None else {}
    data = listed(Transport.from_settings().get("/v1/tokens", params=params))
    if json_:
        print_json(data)
        return
    _table(
        ("ID", "NAME", "WORKSPACE", "ADMIN", "CREATED"),
        [
            (t["id"], t["name"], t["workspace"], "yes" if t["admin"] else "", t["created_at"][:19])
            for t in data
        ],
    )


@token_app.command("revoke")
@command
def revoke_token(
    token_id: str = typer.Argument(..., metavar="ID", help="Token id (tok_…), from `orch token list`."),
) -> None:
    """Revoke a token: refused from the next request on."""
    data = Transport.from_settings().delete(f"/v1/tokens/{segment(token_id)}")
    ok(f"Revoked {data['name']} ({data['id']}) of workspace {data['workspace']}.")
