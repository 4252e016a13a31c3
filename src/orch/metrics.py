"""The platform's metrics: what an operator graphs to see that sandboxes start fast, queues drain,
builds succeed and services answer (docs/metrics.md), served at GET /metrics in Prometheus' text
format.

One `Metrics` per platform, each with a registry of its own: tests make many platforms in one
process, and prometheus_client's global registry would mix their numbers and refuse a second
instrument of the same name. `of(platform)` finds it (making it on first use), so the workers,
the proxy and the run path count into the platform they serve.

Two kinds of numbers. Events (phase times, finished runs and builds, proxy requests, sandboxes
open) are counted in this process as they happen. States (runs per status, queue depths) are read
from the store at scrape time, so they are right after a restart and on a database that several
servers share (there every server reports the same, the database's, figures).

prometheus_client is imported when a `Metrics` is made, not with this module: it costs ~140 ms,
and CLI commands that never serve metrics must not pay for it (issue 12: the CLI's own start).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from sqlalchemy import func, literal, select, union_all

from orch.kept import kept
from orch.models import BuildStatus, DeploymentStatus, RunStatus
from orch.store.schema import BuildRow, RunRow, ServiceDeploymentRow

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

    from orch.services.run_memory import Budget
    from orch.store import Store

# Where a run's time goes, in order (issue 12's breakdown): api = POST accepted → run stored;
# queue = queued → claimed by a worker; prepare = claimed → sandbox ready to start (environment,
# a wait for memory (run_memory), dependencies, bundle, root filesystem); start = launch → the
# agent's process runs; run = the agent's own time; exit = its process exited → sandbox cleaned
# up; store = output and final status stored.
Phase = Literal["api", "queue", "prepare", "start", "run", "exit", "store"]
PHASES: tuple[Phase, ...] = get_args(Phase)

BuildOutcome = Literal["ready", "failed", "cache-hit"]
BUILD_OUTCOMES: tuple[BuildOutcome, ...] = get_args(BuildOutcome)
# An environment's image (build worker, or the cache), or a service version's (deploy worker):
# both take the machine's build capacity, only environments have a cache.
BuildKind = Literal["environment", "service"]
BUILD_KINDS: tuple[BuildKind, ...] = get_args(BuildKind)

# The goal is a run in tens of milliseconds, and Podman's path took ~0.5 s: the buckets resolve
# 5 ms to 30 s, finest where the goal is, so p50 and p99 can be read from the histogram.
PHASE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30)
# Builds take seconds (a cached layer) to the build timeout (30 min by default).
BUILD_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
# A proxied request: the time until the service's answer begins (its headers), not the streaming of
# its body, which a long download or an event stream would stretch without the service being slow.
PROXY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

# The text format's version 0.0.4, which every Prometheus reads: generate_latest's default output
# (names escaped to underscores) is that format, and prometheus_client's own handler labels it so.
# Its CONTENT_TYPE_LATEST is not used: in recent releases (0.26) it names version 1.0.0 (names in
# UTF-8), which this output does not need and older scrapers do not know.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One platform's instruments and the registry /metrics renders."""

    def __init__(
        self,
        store: Store,
        run_memory: Callable[[], Budget] | None = None,
        run_pids: Callable[[], Budget] | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        # No `*_created` series beside every counter and histogram: Prometheus' text format does
        # not use them, and they doubled the series an operator's server stores.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped upstream)
        self.registry: CollectorRegistry = CollectorRegistry()
        r = self.registry
        self._phases: Histogram = Histogram(
            "orch_run_phase_seconds",
            "Seconds a run spent in each phase, from its POST to its stored end.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self._runs_finished: Counter = Counter(
            "orch_runs_finished", "Runs that ended, by final status.", ["status"], registry=r
        )
        self._sandbox_starts: Counter = Counter(
            "orch_run_sandbox_starts",
            "Runs' sandboxes by how they started: warm (started ahead of need, handed the run) or "
            "cold (started for the run).",
            ["start"],
            registry=r,
        )
        self._open = 0  # the gauge's value, for the server's own use
        self._open_lock = threading.Lock()
        self._sandboxes: Gauge = Gauge(
            "orch_sandboxes_open",
            "Sandboxes this server has open now: runs' and sandboxes on demand.",
            registry=r,
        )
        # The platform's budgets, read at each scrape.
        if run_memory is not None:
            _budget_gauges(
                r,
                run_memory,
                ("orch_run_memory_bytes", "memory budget (run_memory)", "memory limits"),
                ("orch_runs_waiting_for_memory", "memory limit", "run_memory"),
            )
        if run_pids is not None:
            _budget_gauges(
                r,
                run_pids,
                ("orch_run_pids", "processes budget (run_pids)", "process limits"),
                ("orch_runs_waiting_for_processes", "process limit", "run_pids"),
            )
        self._builds: Counter = Counter(
            "orch_builds",
            "Image builds that ended, by kind (environment, service) and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self._build_seconds: Histogram = Histogram(
            "orch_build_duration_seconds",
            "Seconds an image build took on a worker, by kind and outcome (cache hits take none).",
            ["kind", "outcome"],
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self._deployments: Counter = Counter(
            "orch_deployments_finished",
            "Service deployments that ended: ready (the new version serves) or failed.",
            ["outcome"],
            registry=r,
        )
        self._proxy: Counter = Counter(
            "orch_proxy_requests",
            "Requests to services through the proxy, by status class.",
            ["code"],
            registry=r,
        )
        self._proxy_seconds: Histogram = Histogram(
            "orch_proxy_request_seconds",
            "Seconds from a proxied request's arrival to the start of its answer.",
            buckets=PROXY_BUCKETS,
            registry=r,
        )
        self._proxy_open: Gauge = Gauge(
            "orch_proxy_open_connections",
            "Long-lived connections open through the proxy now, by kind (websocket, stream).",
            ["kind"],
            registry=r,
        )
        # Every series exists from the start at 0: a rate over a series that appears with its
        # first event misses that event, and a missing series reads as "no data", not "none".
        for p in PHASES:
            self._phases.labels(p)
        for s in RunStatus:
            if s.final:
                self._runs_finished.labels(s.value)
        for k in BUILD_KINDS:
            for o in BUILD_OUTCOMES:
                if o != "cache-hit":
                    self._builds.labels(k, o)
                    self._build_seconds.labels(k, o)
        self._builds.labels("environment", "cache-hit")
        for o in ("ready", "failed"):
            self._deployments.labels(o)
        for start in ("warm", "cold"):
            self._sandbox_starts.labels(start)
        for c in STATUS_CLASSES:
            self._proxy.labels(c)
        for kind in ("websocket", "stream"):
            self._proxy_open.labels(kind)
        r.register(StoreCounts(store))

    # The run path (workers/runs.py, sandbox/, server/api/runs.py).

    def phase(self, name: Phase, seconds: float) -> None:
        """Record that a run spent `seconds` in phase `name`."""
        if name not in PHASES:  # a typo must not become a new series
            raise ValueError(f"unknown run phase {name!r}; one of {', '.join(PHASES)}")
        self._phases.labels(name).observe(max(0.0, seconds))

    @contextmanager
    def timed(self, name: Phase) -> Iterator[None]:
        """Record the time spent inside as phase `name`, also when it raises (a failed prepare
        was still time the caller waited)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phase(name, time.perf_counter() - started)

    def run_finished(self, status: RunStatus | str) -> None:
        """Count a run that reached its final `status` (call once per run, where it is stored)."""
        final = RunStatus(status)
        if not final.final:
            raise ValueError(f"{final.value} is not a final run status")
        self._runs_finished.labels(final.value).inc()

    def sandbox_started(self, warm: bool) -> None:
        """Count a run's sandbox by how it started."""
        self._sandbox_starts.labels("warm" if warm else "cold").inc()

    def sandbox_opened(self) -> None:
        with self._open_lock:
            self._open += 1
        self._sandboxes.inc()

    def sandbox_closed(self) -> None:
        with self._open_lock:
            self._open -= 1
        self._sandboxes.dec()

    def sandboxes_open(self) -> int:
        """How many sandboxes this server has open now (the gauge's value)."""
        return self._open

    @contextmanager
    def sandbox_open(self) -> Iterator[None]:
        """Count a sandbox as open while inside (closed also when the inside raises)."""
        self.sandbox_opened()
        try:
            yield
        finally:
            self.sandbox_closed()

    # The build and deploy workers, and the cache.

    def build_finished(
        self, outcome: BuildOutcome, seconds: float | None = None, kind: BuildKind = "environment"
    ) -> None:
        """Count a build's end; `seconds` (claimed → ended) for builds a worker ran."""
        if outcome not in BUILD_OUTCOMES or kind not in BUILD_KINDS:
            raise ValueError(f"unknown build outcome or kind {outcome!r}, {kind!r}")
        self._builds.labels(kind, outcome).inc()
        if seconds is not None and outcome != "cache-hit":
            self._build_seconds.labels(kind, outcome).observe(max(0.0, seconds))

    def deployment_finished(self, outcome: Literal["ready", "failed"]) -> None:
        self._deployments.labels(outcome).inc()

    # The services' proxy.

    def proxy_request(self, status_code: int, seconds: float) -> None:
        """Count a proxied request by its answer's class (the service's, or orch's own refusal)
        and the time until that answer began."""
        self._proxy.labels(f"{min(max(status_code // 100, 1), 5)}xx").inc()
        self._proxy_seconds.observe(max(0.0, seconds))

    def proxy_connection(self, kind: str, change: int) -> None:
        """A WebSocket or an event stream through the proxy opened (+1) or closed (-1)."""
        self._proxy_open.labels(kind).inc(change)

    def render(self) -> bytes:
        """Every metric in the text format (CONTENT_TYPE); the store is read once, now."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class StoreCounts:
    """Runs per status and the queues' depths, read from the store at each scrape in one query
    (runs GROUP BY status, and the queued builds and deployments; each column is indexed).

    A store that does not answer fails the scrape: Prometheus then records the target as down,
    which is what an operator must see, rather than figures that silently stopped moving."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        # Names only, so the registry knows them without asking the store at registration.
        return self._families({}, 0, 0)

    def collect(self) -> Iterable[Metric]:
        runs = select(literal("runs"), RunRow.status, func.count()).group_by(RunRow.status)
        builds = select(literal("builds"), literal(BuildStatus.QUEUED.value), func.count()).where(
            BuildRow.status == BuildStatus.QUEUED.value
        )
        deploys = select(literal("deployments"), literal(DeploymentStatus.QUEUED.value), func.count()).where(
            ServiceDeploymentRow.status == DeploymentStatus.QUEUED.value
        )
        with self.store.session() as s:
            rows = s.execute(union_all(runs, builds, deploys)).all()
        run_counts = {status: int(n) for table, status, n in rows if table == "runs"}
        queued = {table: int(n) for table, _status, n in rows if table != "runs"}
        return self._families(run_counts, queued.get("builds", 0), queued.get("deployments", 0))

    @staticmethod
    def _families(runs: dict[str, int], builds_queued: int, deployments_queued: int) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        by_status = GaugeMetricFamily(
            "orch_runs", "Runs in the store now, by current status.", labels=["status"]
        )
        for s in RunStatus:
            by_status.add_metric([s.value], runs.get(s.value, 0))
        depth = GaugeMetricFamily(
            "orch_queue_depth", "Items waiting for a worker now, by queue.", labels=["queue"]
        )
        depth.add_metric(["runs"], runs.get(RunStatus.QUEUED.value, 0))
        depth.add_metric(["builds"], builds_queued)
        depth.add_metric(["deployments"], deployments_queued)
        return [by_status, depth]


def _budget_gauges(
    registry: CollectorRegistry,
    budget: Callable[[], Budget],
    held: tuple[str, str, str],
    waiting: tuple[str, str, str],
) -> None:
    """A budget's gauges: its total and what sandboxes hold of it (`state`), and the runs and
    creates waiting in its line. `held` is (name, what the budget is, what it sums); `waiting`
    is (name, what must fit, the setting)."""
    from prometheus_client import Gauge

    name, what, sums = held
    gauge = Gauge(
        name,
        f"The sandboxes' {what} and what sandboxes hold of it now, the sum of their {sums}: held "
        "(runs' and sandboxes on demand), and of that held by sandboxes on demand.",
        ["state"],
        registry=registry,
    )
    gauge.labels("budget").set_function(lambda: budget().total)
    gauge.labels("held").set_function(lambda: budget().used)
    gauge.labels("sandboxes").set_function(lambda: budget().held_by_sandboxes)
    name, limit, setting = waiting
    Gauge(
        name, f"Runs and sandbox creates that wait for their {limit} to fit in {setting}.", registry=registry
    ).set_function(lambda: budget().waiting)


class _Owner(Protocol):
    store: Store


def of(platform: _Owner) -> Metrics:
    """The platform's metrics, made and kept on it at first use (one per app, as tests make many)."""
    memory = (lambda: platform.run_memory) if hasattr(platform, "run_memory") else None
    pids = (lambda: platform.run_pids) if hasattr(platform, "run_pids") else None
    return kept(platform, "metrics", lambda: Metrics(platform.store, memory, pids))
