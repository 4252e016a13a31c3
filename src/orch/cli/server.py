"""`orch server` and `orch login`."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import typer

from orch import config as config_mod
from orch.cli.output import command, ok, warn
from orch.client.transport import Transport, check_url_variable
from orch.errors import InvalidInput


@command
def server(
    host: str = typer.Option(
        None, "--host", help="Address to listen on \\[default: the host setting (ORCH_HOST), else 127.0.0.1]."
    ),
    port: int = typer.Option(
        None,
        "--port",
        metavar="PORT",
        min=0,
        max=65535,
        help="Port to listen on; 0 picks a free one \\[default: the port setting (ORCH_PORT), else 8750].",
    ),
    services_port: int = typer.Option(
        None,
        "--services-port",
        metavar="PORT",
        min=0,
        max=65535,
        help="Port services are served on, an origin of their own; 0 picks a free one "
        "\\[default: the services_port setting (ORCH_SERVICES_PORT), else 8751].",
    ),
    db: str = typer.Option(
        None,
        "--db",
        metavar="URL",
        help="Database URL \\[default: the database_url setting (ORCH_DATABASE_URL), else the SQLite "
        "file in ORCH_HOME].",
    ),
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
    cfg = cfg.with_values(**changes)
    _check_host(cfg.host)
    serve(cfg)


def _check_host(host: str) -> None:
    """InvalidInput unless the server can listen on `host` (--host, or the setting host): a name
    that does not resolve, or an address that is not this machine's, is said as such, before any
    port is tried (a refused bind would read as a port in use)."""
    import errno
    import socket

    fix = "Pass --host an address of this machine: 127.0.0.1 (this machine alone) or 0.0.0.0 (all)."
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except socket.gaierror as e:
        raise InvalidInput(f"Cannot listen on {host}: {e.strerror}.", fix) from None
    except (UnicodeError, ValueError) as e:  # a name IDNA can't encode, a NUL in it
        raise InvalidInput(f"Cannot listen on {host!r}: it is not a host name ({e}).", fix) from None
    except OSError as e:
        if e.errno == errno.EADDRNOTAVAIL:
            said = f"Cannot listen on {host}: it is not an address of this machine."
            raise InvalidInput(said, fix) from None
        # anything else (a port of 0 can't be in use) is the server's own bind to say


@command
def login(
    url: str = typer.Option(
        ..., "--url", metavar="URL", help="The server's address, e.g. http://127.0.0.1:8750."
    ),
    token: str = typer.Option(..., "--token", help="A workspace API token."),
) -> None:
    """Point the CLI at a server: checks the token, then saves both in ORCH_HOME/config.toml."""
    if not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{url!r} is not an http(s) URL.", "Pass e.g. --url http://127.0.0.1:8750.")
    if not token.strip():  # it was sent, and said as a request with no Authorization header
        raise InvalidInput(
            "--token is empty.", "Pass the workspace API token, e.g. --token orch_... (`orch token create`)."
        )
    check_url_variable()  # it wins over what is saved: every next command would refuse it
    transport = Transport(url, token)
    try:
        transport.check_server()  # the token, and that it is orch that answers there
    finally:
        transport.close()
    cfg = config_mod.load()
    config_mod.write_file(Path(cfg.config_path), {"url": url, "token": token})
    ok(f"Logged in to {url}; saved in {cfg.config_path}.")
    # The environment wins over the file (docs/configuration.md): the next command would not use
    # what was just saved, and nothing else would say why.
    # (An empty variable counts as unset, as the settings read it; an address, with or without
    # its last slash.)
    for variable, saved in (("ORCH_URL", url.rstrip("/")), ("ORCH_TOKEN", token)):
        given = os.environ.get(variable) or saved
        if (given.rstrip("/") if variable == "ORCH_URL" else given) != saved:
            warn(
                f"{variable} is set in this shell and wins over {cfg.config_path}: commands here use "
                f"it, not what was just saved. Unset it (`unset {variable}`) to use the saved one."
            )
