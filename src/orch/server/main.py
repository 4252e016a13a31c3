"""`orch server`: bind, bootstrap the CLI's config, and serve."""

from __future__ import annotations

import contextlib
import errno
import gc
import resource
import socket
import sys
import threading
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from orch import config as config_mod
from orch import log_setup
from orch.cluster import machine
from orch.config import Config
from orch.errors import InvalidInput
from orch.secret import box
from orch.server import home_lock
from orch.server.app import create_app
from orch.server.http_protocol import CoalescingHttpTools, ConnectionLimits
from orch.server.proxy_websocket import MAX_MESSAGE
from orch.services import host_check, workspaces
from orch.services.platform import Platform, default_services_url
from orch.store import db


def bind(host: str, port: int, option: str = "--port") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only for sockets that say they are TCP, and
    # without that every keep-alive answer waits ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            fix = f"Stop what uses that port, or pass {option} (0 picks a free one)."
        elif e.errno == errno.EACCES:
            fix = f"Ports under 1024 need root: pass {option} of 1024 or above (0 picks a free one)."
        else:  # the address is not this machine's (EADDRNOTAVAIL), or another reason of the host's
            fix = "Pass --host an address of this machine: 127.0.0.1 (this machine alone) or 0.0.0.0 (all)."
        raise InvalidInput(f"Cannot listen on {host}:{port}: {e.strerror}.", fix) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve(cfg: Config, on_ready: object = None) -> None:
    """Run the control plane until interrupted. What it is given is checked before anything is
    made, and its home's lock is taken before anything of the home is touched (home_lock.py)."""
    if int(cfg.services_port) != 0 and int(cfg.services_port) == int(cfg.port):
        raise InvalidInput(
            f"The server's port and services_port are both {cfg.port}; services need a port of their own.",
            "Pass another --port, or set ORCH_SERVICES_PORT to another port (0 picks a free one).",
        )
    if cfg.cluster and db.dialect(cfg.database_url) != "postgresql":
        raise InvalidInput(
            f"ORCH_CLUSTER is set ({cfg.cluster}), and the store (ORCH_DATABASE_URL) is not PostgreSQL: "
            "a cluster's nodes share their server's store, and none can share a SQLite file.",
            "Set ORCH_DATABASE_URL to a PostgreSQL URL the nodes reach too (docs/scale.md), or unset "
            "ORCH_CLUSTER to run the work on this machine.",
        )
    if str(cfg.secret_key or "") or box.key_path(cfg).exists():
        box.load(cfg)  # a key that is not one is refused now, not once the store is made
    with contextlib.ExitStack() as refused:  # closes the sockets when a step below refuses
        try:
            sock = refused.enter_context(bind(str(cfg.host), int(cfg.port)))
            services = bind(str(cfg.host), int(cfg.services_port), "--services-port")
            services_sock = refused.enter_context(services)
        except InvalidInput:
            home_lock.refuse_if_held(cfg.home)  # the port's holder is this home's server: named
            raise
        db.check_url(cfg.database_url)  # a URL orch can't use, a server that does not answer
        config_mod.make_home(cfg.home)
        lock = home_lock.hold(cfg.home)
        refused.pop_all()
    try:
        _serve(cfg, sock, services_sock, lock)
    finally:
        lock.release()
        sock.close()  # uvicorn closed them once it ran; not when a step before it refused
        services_sock.close()


def _serve(cfg: Config, sock: socket.socket, services_sock: socket.socket, lock: home_lock.HomeLock) -> None:
    # Before the platform and the app are made: what they say (the store's migration) is the log's.
    log_setup.configure()
    raise_open_files()
    url = _url(sock)
    lock.say(url)
    services_url = str(cfg.services_url) or default_services_url(*services_sock.getsockname()[:2])
    cfg = cfg.with_values(services_port=services_sock.getsockname()[1], services_url=services_url)
    platform = machine.platform(cfg)
    app = create_app(platform)
    updates: dict[str, object] = {"url": url}
    token = workspaces.bootstrap(platform, config_mod.load(cfg.home).token)
    if token:
        updates["token"] = token
    config_mod.write_file(cfg.config_path, updates)
    print(f"orch server on {url} (ORCH_HOME={cfg.home}); API docs at {url}/docs", flush=True)
    print(f"services on {services_url}/services/WORKSPACE/NAME/", flush=True)
    for warning in (shared_host(url, services_url), box.loose_key_file(cfg)):
        if warning:
            print(f"orch server: warning: {warning}", file=sys.stderr, flush=True)
    both = by_port(app, app.state.services_app, services_sock.getsockname()[1])
    limits = ConnectionLimits.of_process(services_sock.getsockname()[1])
    server_cfg = uvicorn.Config(both, **serving(limits))
    freeze_startup()
    _Server(server_cfg, platform).run(sockets=[sock, services_sock])


def shared_host(url: str, services_url: str) -> str | None:
    """What to say when the services' address has the web UI's host name (docs/services.md,
    "Their own origin"): a service's page can then set cookies the UI reads."""
    host = urlsplit(url).hostname
    if host is None or host != urlsplit(services_url).hostname:
        return None
    return (
        f"services are served on the web UI's host name ({host}), so a service's page can set "
        "cookies the web UI reads and sign its visitors in to another workspace. Give services "
        "a host name of their own with ORCH_SERVICES_URL (e.g. https://services.example.com); "
        "see docs/services.md."
    )


# The soft limit of open files `orch server` raises itself to, when its hard limit lets it.
OPEN_FILES = 65536


def raise_open_files() -> None:
    """Raise the process's soft limit of open files (RLIMIT_NOFILE) to OPEN_FILES, or to its hard
    limit when lower. The connections each port may hold are a
    share of it (`ConnectionLimits.of_process`), and a login's soft limit is often 1,024 (its
    hard one 524,288) though the server needs more once its services have visitors. Not higher:
    the processes the server starts inherit it, and some programs size a table by it or close
    every descriptor up to it. An operator's lower hard limit (`ulimit -Hn`, systemd's
    `LimitNOFILE=`) stands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# Seconds a stopping server gives the requests in flight before it cuts them (see `serving`).
REQUESTS_GRACE = 10.0


def serving(limits: ConnectionLimits | None = None) -> dict[str, Any]:
    """How uvicorn serves both origins (tests serve the app the same way), bounded by `limits`
    (by default the process's, with no port counted as the services': every connection then
    counts in the API's budget).

    Keep-alive longer than clients keep idle connections (httpx: 5 s), so a client never sends
    on a connection the server is closing at that moment. No access log (its line is built for
    every request even when the level drops it) and no X-Forwarded-For rewriting (the address a
    request came from stays the connection's, which the services' proxy passes on): both are
    per-request cost on the services' proxy. No `server`
    header of uvicorn's: a service's answer carries its own (server/proxy_headers.py), and the
    API's says nothing a client needs. Each connection's writes of one turn of the event loop
    leave as one, its request's head has a deadline and each port holds so many connections at
    once (http_protocol.py). WebSockets are uvicorn's websockets-sansio protocol, whose flow
    the services' proxy holds to one message each way, and a client's message is at most the
    proxy's MAX_MESSAGE (server/proxy_websocket.py): said here, not left to uvicorn's defaults.
    A stop waits REQUESTS_GRACE for the requests in flight, then cuts them: a service's answer
    that streams without end (server-sent events), or a proxied send to a service that stopped
    reading, held the stop for ever (docs/architecture.md, "Stopping")."""
    return {
        "http": CoalescingHttpTools.limited(limits or ConnectionLimits.of_process(None)),
        "ws": "websockets-sansio",
        "ws_max_size": MAX_MESSAGE,
        "log_level": "warning",
        "lifespan": "on",
        "timeout_keep_alive": 65,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": REQUESTS_GRACE,
    }


def freeze_startup() -> int:
    """Move what start-up made (the app, its routes and models, every module: ~140,000 objects)
    out of the garbage collector's reach, and return how many. A full collection walks every
    tracked object with the interpreter lock held, so it stalled every request and run for
    ~60 to 120 ms on a 2-core machine, a few times a minute under load: the runs' p99. Frozen,
    those objects are never walked again (nor freed, which they would not be anyway)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def by_port(app: ASGIApp, services: ASGIApp, services_port: int) -> ASGIApp:
    """One server, two origins: a connection to the services' port goes to `services`,
    everything else (the lifespan too) to `app`."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        target = services if scope["type"] != "lifespan" and server and server[1] == services_port else app
        await target(scope, receive, send)

    return dispatch


def _check_host(platform: Platform) -> None:
    """The machine's self-check (`host_check.watch`): what it finds is said once in the log, and
    runs fail with it while it stands."""
    host_check.watch(platform, lambda said: print(said, file=sys.stderr, flush=True))


class _Server(uvicorn.Server):
    """uvicorn's server, which tells the platform's long polls to answer as soon as it is asked
    to stop: uvicorn waits for every request in flight before it stops, and a follower of a
    run's or a service's output may wait up to 30 s."""

    def __init__(self, config: uvicorn.Config, platform: Platform) -> None:
        super().__init__(config)
        self.platform = platform

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # After the workers' start-up cleanup (it prunes the platform's unnamed images, which a
        # check's build step must not meet half-way), and off the event loop: it takes seconds.
        if not self.should_exit:
            check = threading.Thread(target=_check_host, args=(self.platform,), name="orch-host-check")
            check.daemon = True
            check.start()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.platform.stopping.set()
        self.platform.notify_runs()  # waiting followers answer now, rather than at their next look
        super().handle_exit(sig, frame)
