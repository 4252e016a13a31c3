"""`orch server` and `orch login`."""

from __future__ import annotations

import gc
from pathlib import Path

import typer

from orch import config as config_mod
from orch.cli.output import command, ok
from orch.client.transport import Transport
from orch.errors import InvalidInput


@command
def server(
    host: str = typer.Option(None, "--host", help="Address to listen on \\[default: 127.0.0.1]."),
    port: int = typer.Option(
        None, "--port", min=0, max=65535, help="Port to listen on; 0 picks a free one \\[default: 8750]."
    ),
    services_port: int = typer.Option(
        None,
        "--services-port",
        min=0,
        max=65535,
        help="Port services are served on, an origin of their own; 0 picks a free one \\[default: 8751].",
    ),
    db: str = typer.Option(None, "--db", help="Database URL \\[default: the SQLite file in ORCH_HOME]."),
) -> None:
    """Start the control plane: API, web UI, workers and the services' proxy.

    The REST API has its docs at /docs and the web UI is at /ui.
    The services' proxy listens on a port of its own."""
    from orch.cli import GC_DEFAULTS
    from orch.server.main import serve

    gc.set_threshold(*GC_DEFAULTS)  # a long-lived process: the collector as CPython sets it
    cfg = config_mod.load()
    given = {"host": host, "port": port, "services_port": services_port, "database_url": db}
    changes = {k: v for k, v in given.items() if v is not None}
    serve(cfg.with_values(**changes))


@command
def login(
    url: str = typer.Option(..., "--url", help="The server's address, e.g. http://127.0.0.1:8750."),
    token: str = typer.Option(..., "--token", help="A workspace API token."),
) -> None:
    """Point the CLI at a server: checks the token, then saves both in ORCH_HOME/config.toml."""
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{url!r} is not an http(s) URL.", "Pass e.g. --url http://127.0.0.1:8750.")
    Transport(url, token).get("/v1/environments")
    cfg = config_mod.load()
    config_mod.write_file(Path(cfg.config_path), {"url": url, "token": token})
    ok(f"Logged in to {url}; saved in {cfg.config_path}.")
