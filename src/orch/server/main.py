"""`orch server`: bind, bootstrap the CLI's config, and serve."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from types import FrameType

import uvicorn

from orch import config as config_mod
from orch.config import Config
from orch.engine import PodmanEngine
from orch.errors import InvalidInput
from orch.sandbox import runc
from orch.server.app import create_app
from orch.services import host_check, workspaces
from orch.services.platform import Platform
from orch.store import Store


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off only for sockets that say they are TCP, and
    # without that every keep-alive answer waits ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InvalidInput(
            f"Cannot listen on {host}:{port}: {e.strerror}.",
            "Stop what uses that port, or pass --port (0 picks a free one).",
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(cfg: Config, on_ready: object = None) -> None:
    """Run the control plane until interrupted."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    platform = Platform(cfg, Store(cfg.database_url), PodmanEngine())
    # Runs' sandboxes start through the OCI runtime itself; Podman builds and runs services.
    platform.launchers = dict(runc.launchers(platform.container_prefix))
    # Sandboxes' networks and isolation rules: a machine that cannot have them says so now,
    # not at the first run.
    platform.engine.prepare()
    app = create_app(platform)
    sock = bind(str(cfg.host), int(cfg.port))
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}"
    updates: dict[str, object] = {"url": url}
    token = workspaces.bootstrap(platform, config_mod.load(cfg.home).token)
    if token:
        updates["token"] = token
    config_mod.write_file(cfg.config_path, updates)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"orch server on {url} (ORCH_HOME={cfg.home}); API docs at {url}/docs", flush=True)
    # Keep-alive longer than clients keep idle connections (httpx: 5 s), so a client never sends
    # on a connection the server is closing at that moment.
    server_cfg = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=65)
    _Server(server_cfg, platform).run(sockets=[sock])


def _check_host(platform: Platform) -> None:
    """The machine's self-check; what it finds is said once here, and runs fail with it."""
    report = host_check.run(platform, fresh=False)
    if report.problem is not None:
        platform.host_problem = report.problem
        said = f"orch server: no sandbox can start on this machine. {report.problem}"
        print(said, file=sys.stderr, flush=True)


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
