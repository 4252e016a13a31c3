"""Where the services' proxy sends a request, and what it has open there.

Routes: a service's workspace, whether it is public, and the containers (replicas) that answer,
read from the store and kept until a service changes, or for ROUTE_SECONDS at most: whatever
changes one on this platform (a deploy's switch, the supervisor's pass, stop, restart, delete)
calls `changed()` after its commit, and what another platform of the store changed (a cluster's
node, which supervises the services its server proxies to) is read again within ROUTE_SECONDS. A
proxied request costs no store lookup, but one a ROUTE_SECONDS per service does. A service held
by another platform that has a proxy (a cluster's node) is reached through that proxy: its
backends' `relay` (server/relay.py).

Traffic: the requests in flight to each container and the long-lived connections open to it
(WebSockets, event streams). Before a container goes (a redeploy replaces it, a stop or a delete
removes it), `drain` takes it out of its route at once, lets the requests in flight to it finish
(up to DRAIN_SECONDS), then closes its long-lived connections cleanly: a WebSocket gets a close
frame, an event stream its end (a browser's EventSource then reconnects, to what serves now). A
request still in flight then is `cut` (its container stops under it): its caller hears why, and
an answer already streaming ends there (`InFlight.when_cut`), its caller's connection cut."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch import metrics
from orch.kept import kept
from orch.models import ServiceState
from orch.services import workspaces
from orch.services.platform import Platform
from orch.store.schema import NodeRow, ServiceLeaseRow, ServiceReplicaRow, ServiceRow, WorkspaceRow

DRAIN_SECONDS = 10.0  # how long requests in flight to a container that goes may take to finish
# How long the proxy trusts a token it checked in the store: a revoked token stops opening
# private services within this time (the API checks the store at every call).
TOKEN_SECONDS = 1.0
_MAX_TOKENS = 10_000
# How long a route read from the store is trusted: changes made by another platform of the store
# (a node restarted a crashed replica elsewhere, a takeover) reach this proxy within it.
ROUTE_SECONDS = 1.0
# Routes kept at most (those of services that do not exist too, which anyone may ask for): past
# it, the expired ones go, and all of them if that is not enough.
_MAX_ROUTES = 10_000
_MAX_NAME = 63  # no workspace or service name is longer (models.check_name)
# How long a container that refused a connection gets no requests, unless the routes change first.
REFUSED_SECONDS = 3.0
# WebSocket close codes (RFC 6455 §7.4.1, IANA registry): the service restarts (a redeploy), or
# goes away (stop, delete).
RESTARTING, GOING_AWAY = 1012, 1001
# The reasons of drains after which the service has no replica at all (a stop, a delete: the
# reasons deployed.py and reconcile.py give): a request cut by one is not told to try again.
STOPPED, DELETED = "the service was stopped", "the service was deleted"


@dataclass(frozen=True)
class Backend:
    """One replica of a service: its container, and where the proxy sends its requests. On the
    machine that runs it, `address` is the container's own on the sandbox bridge; on any other
    (a cluster's server) `relay` is the HOST:PORT of its node's proxy, which takes requests for
    it (server/node_proxy.py)."""

    container: str
    address: str
    relay: str | None = None


@dataclass(frozen=True)
class Route:
    workspace: str
    workspace_id: str
    service_id: str
    name: str
    public: bool
    state: str
    backends: tuple[Backend, ...]  # its replicas that run, in slot order


class Connection:
    """A long-lived connection through the proxy; `close` may be called from any thread."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "websocket" or "stream"
        self._loop = asyncio.get_running_loop()
        self.closing = asyncio.Event()
        self.code = GOING_AWAY
        self.reason = ""

    def close(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason
        self._loop.call_soon_threadsafe(self.closing.set)


class InFlight:
    """A request in flight to a container (`Routing.begin`); calling it ends it (once). `cut`:
    why the platform stopped its container with it still in flight (a drain's time ran out: a
    restart, a redeploy, a stop), so that its caller hears that rather than a crash's words.
    An answer already streaming is told at once (`when_cut`): it ends there, its caller's
    connection cut. Found by a tester: a download in flight through a redeploy got no byte more
    once its container was gone (its network went with it, so no end of the connection came
    either), and hung until the proxy's READ_TIMEOUT, 300 s."""

    __slots__ = ("_ended", "_on_cut", "_routing", "container", "cut")

    def __init__(self, routing: Routing, container: str) -> None:
        self._routing = routing
        self.container = container
        self.cut: str | None = None
        self._ended = False
        self._on_cut: Callable[[], None] | None = None

    def when_cut(self, callback: Callable[[], None]) -> None:
        """Call `callback` when a drain cuts the request (from the drain's thread: it must only
        hand the news to its own loop), or now if one did already."""
        with self._routing._lock:
            if self.cut is None:
                self._on_cut = callback
                return
        callback()

    def _cutting(self, reason: str) -> None:
        """The drain's time ran out with the request in flight (under the routing's lock)."""
        self.cut = reason
        if self._on_cut is not None:
            self._on_cut()

    def __call__(self) -> None:
        if not self._ended:
            self._ended = True
            self._routing._end(self)


class Routing:
    """One platform's routes and traffic (see the module's docstring)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], tuple[Route | None, float]] = {}  # and until when
        self._generation = 0
        self._draining: dict[str, str] = {}  # containers being drained -> why
        self._refused: dict[str, float] = {}  # containers that refused a connection, until when
        self._in_flight: dict[str, set[InFlight]] = {}
        self._open: dict[str, set[Connection]] = {}
        self._turn = itertools.count()
        self._watching = False
        self._tokens: dict[str, tuple[str, float]] = {}  # sha256 of a token -> its workspace, until
        self._listeners: list[Callable[[list[str]], None]] = []

    # Tokens.

    def workspace_of(self, token: str | None) -> str:
        """The workspace of `token` (Unauthorized if none); checked in the store at most once a
        TOKEN_SECONDS (blocking on a miss: call it in a thread, or `known` first)."""
        key = hashlib.sha256(token.encode()).hexdigest() if token else ""
        found = self._tokens.get(key)
        if found is not None and found[1] > time.monotonic():
            return found[0]
        ws_id = workspaces.workspace_of(self.platform, token)
        if len(self._tokens) >= _MAX_TOKENS:
            self._tokens.clear()
        self._tokens[key] = (ws_id, time.monotonic() + TOKEN_SECONDS)
        return ws_id

    def known(self, token: str | None) -> str | None:
        """The workspace of `token` if it was checked less than TOKEN_SECONDS ago (no store)."""
        if not token:
            return None
        found = self._tokens.get(hashlib.sha256(token.encode()).hexdigest())
        return found[0] if found is not None and found[1] > time.monotonic() else None

    # Routes.

    def cached(self, workspace: str, name: str) -> tuple[bool, Route | None]:
        """(found, route): whether the route is known now, and it (None: no such service)."""
        found = self._routes.get((workspace, name))
        if found is None or found[1] <= time.monotonic():
            return False, None
        return True, found[0]

    def lookup(self, workspace: str, name: str) -> Route | None:
        """The route of WORKSPACE/NAME from the store (blocking: call it in a thread), kept (up
        to _MAX_ROUTES of them). A name no service can have is not looked up, nor kept."""
        if not (0 < len(workspace) <= _MAX_NAME and 0 < len(name) <= _MAX_NAME):
            return None
        with self._lock:
            generation = self._generation
        route = _read(self.platform, workspace, name)
        with self._lock:
            if generation == self._generation:  # not changed meanwhile: what was read still holds
                now = time.monotonic()
                if len(self._routes) >= _MAX_ROUTES:
                    self._routes = {k: v for k, v in self._routes.items() if v[1] > now}
                    if len(self._routes) >= _MAX_ROUTES // 2:
                        self._routes = {}
                self._routes[(workspace, name)] = route, now + ROUTE_SECONDS
        return route

    def changed(self) -> None:
        """A service changed in the store (committed): routes are read again when next needed."""
        with self._lock:
            self._generation += 1
            self._routes.clear()
            self._draining.clear()  # the containers drained so far are out of the store's routes
            self._refused.clear()

    def refused(self, container: str) -> None:
        """`container` refused a connection: its process is gone. It gets no request until the
        store's routes change (the supervisor replaces it) or REFUSED_SECONDS pass; without this,
        the next requests would wait out a connect timeout each on its vanished address."""
        with self._lock:
            self._refused[container] = time.monotonic() + REFUSED_SECONDS

    def pick(self, route: Route) -> list[Backend]:
        """The route's backends to try, in order: round robin over those not being drained and
        not refusing connections."""
        now = time.monotonic()
        with self._lock:
            out = {c for c, until in self._refused.items() if until > now} | set(self._draining)
        ready = [b for b in route.backends if b.container not in out]
        if len(ready) < 2:
            return ready
        start = next(self._turn) % len(ready)
        return ready[start:] + ready[:start]

    def going(self, route: Route) -> str | None:
        """Why the route's backends are out, when the platform is draining one of them (a
        restart, a redeploy, a stop): not the service's doing."""
        with self._lock:
            return next(
                (self._draining[b.container] for b in route.backends if b.container in self._draining), None
            )

    # Traffic.

    def begin(self, container: str) -> InFlight:
        """Count a request in flight to `container`; return what ends it (once, whenever called)."""
        request = InFlight(self, container)
        with self._lock:
            self._in_flight.setdefault(container, set()).add(request)
        return request

    def _end(self, request: InFlight) -> None:
        with self._lock:
            left = self._in_flight.get(request.container)
            if left is not None:
                left.discard(request)
                if not left:
                    del self._in_flight[request.container]

    @contextmanager
    def long_lived(self, container: str, kind: str) -> Iterator[Connection]:
        """Register a WebSocket or an event stream to `container` while inside (counted in the
        metrics); a drain of the container closes it through the Connection's `closing`."""
        conn = Connection(kind)
        # Counted before it is open and after it is closed: whoever sees it open sees it counted.
        metrics.of(self.platform).proxy_connection(kind, +1)
        try:
            with self._lock:
                self._open.setdefault(container, set()).add(conn)
                draining = container in self._draining
            if draining:
                conn.close(RESTARTING, "the service is being replaced")
            self._watch_stopping()
            yield conn
        finally:
            with self._lock:
                found = self._open.get(container)
                if found is not None:
                    found.discard(conn)
                    if not found:
                        del self._open[container]
            metrics.of(self.platform).proxy_connection(kind, -1)

    def open_connections(self, container: str | None = None) -> int:
        with self._lock:
            groups = self._open.values() if container is None else [self._open.get(container, set())]
            return sum(len(g) for g in groups)

    def drain(self, containers: list[str], code: int, reason: str, timeout: float = DRAIN_SECONDS) -> None:
        """Take `containers` out of their routes now, wait (up to `timeout`) for the requests in
        flight to them, then close their long-lived connections (blocking: call it in a thread)."""
        containers = [c for c in containers if c]
        if not containers:
            return
        with self._lock:
            self._draining.update(dict.fromkeys(containers, reason))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._in_flight.get(c) for c in containers):
            time.sleep(0.02)
        with self._lock:  # still in flight: its container stops under it, the platform's doing
            for container in containers:
                for request in self._in_flight.get(container, ()):
                    request._cutting(reason)
        self._close([c for container in containers for c in self._open.get(container, ())], code, reason)
        # Closed: each connection ends its two directions and leaves (quickly; bounded anyway).
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(self._open.get(c) for c in containers):
            time.sleep(0.02)
        self.gone(containers)

    def on_gone(self, listener: Callable[[list[str]], None]) -> None:
        """Call `listener` (from any thread) with the containers that go: the proxy closes the
        connections it keeps to them."""
        self._listeners.append(listener)

    def gone(self, containers: list[str]) -> None:
        for listener in list(self._listeners):
            listener(containers)

    def _close(self, connections: list[Connection], code: int, reason: str) -> None:
        for conn in list(connections):
            conn.close(code, reason)

    def _watch_stopping(self) -> None:
        """At the server's stop, close every long-lived connection: uvicorn waits for the answers
        in flight before it stops, and an event stream never ends by itself."""
        if self._watching:
            return
        self._watching = True

        def watch() -> None:
            self.platform.stopping.wait()
            with self._lock:
                everything = [c for group in self._open.values() for c in group]
            self._close(everything, GOING_AWAY, "the server is stopping")

        threading.Thread(target=watch, name="orch-proxy-stop", daemon=True).start()


def _read(platform: Platform, workspace: str, name: str) -> Route | None:
    if "\x00" in workspace or "\x00" in name:  # no name holds one, and PostgreSQL refuses it
        return None
    with platform.store.session() as s:
        query = (
            select(ServiceRow, WorkspaceRow.id)
            .join(WorkspaceRow, WorkspaceRow.id == ServiceRow.workspace_id)
            .where(WorkspaceRow.name == workspace, ServiceRow.name == name)
        )
        found = s.execute(query).first()
        if found is None:
            return None
        svc, ws_id = found
        rows = s.scalars(
            select(ServiceReplicaRow)
            .where(ServiceReplicaRow.service_id == svc.id)
            .order_by(ServiceReplicaRow.slot)
        ).all()
        relay = _relay(s, platform, svc.id)
        # A stopped service's containers get no request from the stop on, on any server, while
        # its holder drains and removes them.
        stopped = svc.desired == "stopped"
        backends = tuple(
            Backend(r.container, r.address, relay)
            for r in rows
            if r.container and r.address and r.state == ServiceState.RUNNING.value and not stopped
        )
        public = bool(json.loads(svc.manifest).get("public", False))
        state = ServiceState.STOPPED.value if stopped else svc.state
        return Route(workspace, ws_id, svc.id, svc.name, public, state, backends)


def _relay(s: Session, platform: Platform, service_id: str) -> str | None:
    """The proxy of the node that holds the service, when that is another platform than this
    one and it has one (a cluster's node; docs/scale.md): its replicas are on that machine."""
    found = s.execute(
        select(NodeRow.proxy)
        .join(ServiceLeaseRow, ServiceLeaseRow.holder == NodeRow.instance)
        .where(ServiceLeaseRow.service_id == service_id, NodeRow.instance != platform.instance)
    ).scalar()
    return str(found) if found else None


def of(platform: Platform) -> Routing:
    """The platform's routing, made and kept on it at first use."""
    return kept(platform, "routing", lambda: Routing(platform))
