"""A node's proxy (docs/scale.md#services-across-machines): the services' proxy app
(server/proxy.py) served by a cluster's node on its cluster address, for the services it holds,
in front of the calls to the sandboxes it holds (server/node_api.py), to the cluster's servers
only (server/relay.py). uvicorn runs it on a thread of the node's
process, as long as the node works, bounded as the server's own ports are (a request's head
has a deadline, the connections a budget: docs/configuration.md#connections)."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from orch.server import node_api
from orch.server.http_protocol import CoalescingHttpTools, ConnectionLimits
from orch.server.main import bind
from orch.server.proxy import ServiceProxy
from orch.server.proxy_websocket import MAX_MESSAGE
from orch.server.relay import format_address
from orch.services.platform import Platform

START_TIMEOUT = 10.0


class NodeProxy:
    """The node's proxy, listening on HOST:PORT (0: a free port) from its construction."""

    def __init__(self, platform: Platform, host: str, port: int) -> None:
        self._sock = bind(host, port, "ORCH_NODE_PROXY_PORT")
        self.address = format_address(host, self._sock.getsockname()[1])
        self.app = ServiceProxy(node_api.create(platform), platform, for_node=True)
        # Bounded as the server's services' port is (server/http_protocol.py): a head within
        # its deadline, and a share of the node's open files in connections.
        limits = ConnectionLimits.of_process(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            http=CoalescingHttpTools.limited(limits),
            ws="websockets-sansio",  # as the server's (server/main.py's `serving`)
            ws_max_size=MAX_MESSAGE,
            log_level="warning",
            lifespan="off",
            access_log=False,
            proxy_headers=False,
            server_header=False,  # the service's own passes (server/main.py's `serving`)
        )
        self._server = uvicorn.Server(config)
        self._served = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orch-node-proxy", daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            try:
                await self._server.serve(sockets=[self._sock])
            finally:
                await self.app.close()  # its connections to the containers
                self._served.set()

        with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
            runner.run(serve())

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"the node's services proxy did not start on {self.address}")

    def stop(self) -> None:
        """Stop serving: wait until uvicorn has closed its connections (not for the end of the
        thread: its event loop's end waits for idle threadpool workers, up to 10 s)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._served.wait(START_TIMEOUT)
        self._sock.close()
