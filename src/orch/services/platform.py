"""The running platform's parts, handed to every use case."""

from __future__ import annotations

import functools
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from orch.config import Config
from orch.engine.base import Engine
from orch.engine.network import answers_tcp
from orch.errors import OrchError
from orch.sandbox.held import Registry
from orch.sandbox.launcher import Isolation, Launcher, Sandboxes
from orch.services.run_memory import Budget, Budgets
from orch.store import Store

# The label naming the platform's ORCH_HOME on everything it makes: a path on the server's
# machine, which a build's log shows without (services/build_log.py).
HOME_LABEL = "org.orch.home"


def default_services_url(host: str, port: int) -> str:
    """The services' address when `services_url` is not set, for a server listening on `host`
    (docs/services.md, "Their own origin"). On loopback, the host name `localhost`, apart from the
    web UI's 127.0.0.1: browsers keep cookies by host name, not by port, so on the UI's own host a
    service's page could set cookies the UI reads (cookie tossing). Any other address is kept as it
    is, and the server warns at start that services need a host name of their own."""
    if host in ("127.0.0.1", "localhost") or (host == "::1" and _localhost_has("::1")):
        host = "localhost"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


@functools.cache
def _localhost_has(address: str) -> bool:
    """Whether the name `localhost` resolves to `address` on this machine (/etc/hosts)."""
    try:
        return any(found[4][0] == address for found in socket.getaddrinfo("localhost", None))
    except OSError:
        return False


@dataclass
class Platform:
    config: Config
    store: Store
    engine: Engine
    # Set when work is queued, so workers wake at once instead of at their next poll.
    wake_builds: threading.Event = field(default_factory=threading.Event)
    wake_runs: threading.Event = field(default_factory=threading.Event)
    wake_deploys: threading.Event = field(default_factory=threading.Event)
    wake_supervisor: threading.Event = field(default_factory=threading.Event)
    # One writer at a time of the platform's services and their containers (supervisor, deploy
    # worker, API): a switch of versions never meets a restart half-way.
    services_lock: threading.RLock = field(default_factory=threading.RLock)
    # Set when the server begins to stop: long polls answer at once with what they have, so a
    # stopping server does not wait out its followers' waits (up to 30 s each).
    stopping: threading.Event = field(default_factory=threading.Event)
    # What the machine's self-check at start found missing (services/host_check.py): runs then
    # fail at once with that sentence instead of each failing in the engine with its exit 125.
    host_problem: OrchError | None = None
    # The cluster node this platform works as (`orch node start`; docs/scale.md): its claims
    # record it, and its run workers prefer runs whose image it holds. None: one machine.
    node: str | None = None
    # Image tags known to exist on this machine (base images, and environments' images pulled
    # or found): checked once per platform, not once per run.
    present_base_tags: set[str] = field(default_factory=set)
    # Whether a service's new container answers at (address, port): a TCP connect; tests on the
    # fake engine, whose containers have no address to connect to, put their own answer here.
    probe: Callable[[str, int], bool] = field(default=answers_tcp)
    # What starts runs' sandboxes, by isolation (sandbox/launcher.py); none given (tests on the
    # fake engine): the engine's own run_container.
    launchers: dict[Isolation, Sandboxes] = field(default_factory=dict)
    # The sandboxes on demand this server holds open (services/sandboxes.py), and what opens
    # them: the launchers above, or a test's fake holder.
    held: Registry = field(default_factory=Registry)
    # When the supervisor last listed the services' containers, and whether it found any: with
    # no service, no deploy under way and none found, its pass skips the engine (see
    # reconcile.IDLE_LISTING) rather than start a `podman ps` every second.
    services_listed_at: float = field(default=float("-inf"), repr=False)
    services_seen: bool = field(default=True, repr=False)
    # The memory sandboxes (runs' and on demand) hold at once, within `run_memory` (services/run_memory.py).
    run_memory: Budget = field(init=False, repr=False)
    # Their processes (the sum of their process limits), within `run_pids`: the same line.
    run_pids: Budget = field(init=False, repr=False)
    # The runs being followed: run id -> [followers, changes since the first one came]; a
    # long-polling reader waits for its run's count to move (runs.follow_logs).
    _follow_lock: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _followed: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _wakers: dict[str, list[Callable[[], None]]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_memory = Budget(self.config.run_memory)
        self.run_pids = Budget(int(self.config.run_pids))

    @property
    def budgets(self) -> Budgets:
        """Both budgets, taken in their one order (services/run_memory.py)."""
        return Budgets(self.run_memory, self.run_pids)

    def launcher(self, isolation: Isolation) -> Launcher:
        return self.launchers.get(isolation) or self.engine

    @property
    def instance(self) -> str:
        """Short id of this platform (its ORCH_HOME, and its node's name in a cluster, where
        every machine may have the same ORCH_HOME): every image and container carries it."""
        key = str(self.config.home) if self.node is None else f"{self.config.home}\0{self.node}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @property
    def runs_work(self) -> bool:
        """Whether this platform runs work on its own engine: one machine's server, or a node. A
        cluster's server (ORCH_CLUSTER set) runs none: it changes rows, and the nodes act on them
        (a service's supervisor on the node that holds its lease)."""
        return self.node is not None or not self.config.values.get("cluster")

    @property
    def container_prefix(self) -> str:
        """How the names of this platform's containers (sandboxes and services) begin."""
        return f"orch-{self.instance}-"

    @property
    def services_url(self) -> str:
        """Where services are reached: their own origin, apart from the API and web UI's
        (docs/services.md, "Their own origin")."""
        if self.config.services_url:
            return str(self.config.services_url)
        return default_services_url(str(self.config.host), int(self.config.services_port))

    @property
    def labels(self) -> dict[str, str]:
        return {"org.orch.instance": self.instance, HOME_LABEL: str(self.config.home)}

    def service_labels(self, service_id: str | None = None) -> dict[str, str]:
        """The labels of this platform's service containers (of one service, given its id)."""
        found = {**self.labels, "org.orch.kind": "service"}
        if service_id:
            found["org.orch.service"] = service_id
        return found

    def notify_runs(self, run_id: str | None = None) -> None:
        """Wake the readers of `run_id`'s output (None: of every run)."""
        with self._follow_lock:
            for counts in self._followed.values() if run_id is None else [self._followed.get(run_id)]:
                if counts is not None:
                    counts[1] += 1
            wakers = [w for ws in self._wakers.values() for w in ws] if run_id is None else []
            wakers += self._wakers.get(run_id, []) if run_id is not None else []
        for wake in wakers:
            wake()

    @contextmanager
    def following(self, run_id: str, wake: Callable[[], None] | None = None) -> Iterator[Callable[[], int]]:
        """While inside, the returned function counts `run_id`'s changes (its notifications), so
        a long-polling reader wakes for its own run only, not for every run's output; `wake`, if
        given, is called (from the notifying thread) at each change."""
        with self._follow_lock:
            counts = self._followed.setdefault(run_id, [0, 0])
            counts[0] += 1
            if wake is not None:
                self._wakers.setdefault(run_id, []).append(wake)
        try:
            yield lambda: counts[1]
        finally:
            with self._follow_lock:
                counts[0] -= 1
                if counts[0] == 0:
                    del self._followed[run_id]
                    self._follow_lock.notify_all()
                if wake is not None:
                    self._wakers[run_id].remove(wake)
                    if not self._wakers[run_id]:
                        del self._wakers[run_id]

    def followers(self, run_id: str) -> int:
        """How many readers are waiting for `run_id`'s output now."""
        with self._follow_lock:
            return self._followed.get(run_id, [0, 0])[0]

    def until_followed(self, run_id: str, timeout: float) -> bool:
        """Wait until no reader waits for `run_id` any more (each took what woke it), at most
        `timeout` seconds; whether none does."""
        with self._follow_lock:
            return self._follow_lock.wait_for(lambda: run_id not in self._followed, timeout)
