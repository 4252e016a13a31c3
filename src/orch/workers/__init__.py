"""The platform's background work, started and stopped in one place.

    Workers(platform)
    ├── build queue    workers/builds.py      environments' images      wake: platform.wake_builds
    ├── run queue      workers/runs.py        runs in sandboxes         wake: platform.wake_runs
    ├── deploy queue   workers/deploys.py     services' new versions    wake: platform.wake_deploys
    ├── supervisor     workers/supervisor.py  services kept running     wake: platform.wake_supervisor
    └── reaper         workers/sandboxes.py   sandboxes on demand removed when idle, expired or dead

Each queue is a table in the store drained by `QueueWorkers` (workers/queue.py): whoever queues
work sets the queue's wake event. `start` first moves runs' output, builds' logs and bundles
that files held before 0014 into the store, then settles what a stopped server left in flight, in
this order: builds (which also removes the platform's unnamed images while nothing builds), runs,
deployments, then the sandboxes on demand of before a restart; then the threads start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from orch.errors import store_refused
from orch.sandbox.launcher import sweep_all
from orch.services import build_output, bundles, deployed_logs, run_output
from orch.services.platform import Platform
from orch.store import refusals
from orch.workers import builds, deploys, runs
from orch.workers.queue import QueueWorkers
from orch.workers.sandboxes import Reaper
from orch.workers.supervisor import Supervisor

log = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds a stop waits for its workers to end, all of them together


def build_queue(platform: Platform, count: int = 1, poll: float = 1.0) -> QueueWorkers:
    queue = QueueWorkers(
        "build",
        claim=lambda: builds.claim(platform),
        # A running build is stopped when the workers stop, and queued again (workers/builds.py).
        work=lambda build_id: builds.run(platform, build_id, queue.stopping),
        recover=lambda: builds.recover(platform),
        wake=platform.wake_builds,
        count=count,
        poll=poll,
    )
    return queue


def run_queue(platform: Platform, count: int = 1, poll: float = 1.0) -> QueueWorkers:
    """`count` bounds how many sandboxes run at once."""
    return QueueWorkers(
        "run",
        claim=lambda: runs.claim(platform),
        work=lambda run_id: runs.execute(platform, run_id),
        recover=lambda: runs.recover(platform),
        wake=platform.wake_runs,
        count=count,
        poll=poll,
    )


def deploy_queue(platform: Platform, poll: float = 1.0) -> QueueWorkers:
    queue = QueueWorkers(
        "deploy",
        claim=lambda: deploys.claim(platform),
        # A deployment waiting for its container to answer ends when the workers stop.
        work=lambda dep_id: deploys.execute(platform, dep_id, queue.stopping),
        recover=lambda: deploys.recover(platform),
        wake=platform.wake_deploys,
        poll=poll,
    )
    return queue


class Workers:
    """Every worker thread of one platform."""

    def __init__(self, platform: Platform, poll: float = 1.0, supervise: float | None = None) -> None:
        """`poll`: how often idle queue workers look at the store (and the supervisor passes,
        unless `supervise` says otherwise)."""
        cfg = platform.config
        self.platform = platform
        self.queues = [
            build_queue(platform, int(cfg.build_workers), poll),
            run_queue(platform, int(cfg.run_workers), poll),
            deploy_queue(platform, poll),
        ]
        self.supervisor = Supervisor(platform, poll=poll if supervise is None else supervise)
        self.reaper = Reaper(platform, poll=min(poll, 1.0))

    def start(self) -> None:
        if moved := run_output.import_files(self.platform):
            log.info("moved the output of %d runs from files into the store", moved)
        if moved := build_output.import_files(self.platform):
            log.info("moved the logs of %d builds from files into the store", moved)
        if moved := bundles.import_files(self.platform):
            log.info("moved %d bundles from files into the store", moved)
        if moved := deployed_logs.import_files(self.platform):
            log.info("moved the history of %d services' output from files into the store", moved)
        for q in self.queues:
            q.start()
        self.supervisor.start()
        self.reaper.start()

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop every thread; services' containers keep running. The queues claim nothing more,
        and the sandboxes of the runs in flight are ended at once, all together: their workers
        record them as the stop's (workers/runs.py), within one `grace` for every worker (not
        one each: a worker blocked on its sandbox cost its 5 s before, 41 s for 8 runs). Running
        builds are stopped too, everything they started with them, and queued again (or failed
        after their second stop: workers/builds.py). What is still busy after it (a loop waiting
        on its model, a build pushing its image) is settled by the next start."""
        _step("removing the sandboxes on demand", self.reaper.stop)
        _step("stopping the services' supervisor", self.supervisor.stop)
        for q in self.queues:
            q.halt()
        launchers, prefix = list(self.platform.launchers.values()), self.platform.container_prefix
        for launcher in launchers:
            launcher.close()
        for launcher in launchers:
            launcher.kill(prefix)
        deadline = time.monotonic() + grace
        if busy := [name for q in reversed(self.queues) for name in q.join(deadline)]:
            log.warning("stopping without %s, still busy after %.0f s", ", ".join(busy), grace)
        # A stopped server leaves no sandbox running (one a busy worker started since, too).
        sweep_all(launchers, prefix)


def _step(what: str, step: Callable[[], object]) -> None:
    """One step of a stop: one that fails is said, and the stop goes on, so that no sandbox
    outlives the server for a record the store refused (a busy SQLite's lock held by another
    process aborted the whole stop, and a sandbox on demand outlived it: found by a tester). The
    store refusing is one line; anything else, a bug, its traceback. The next start settles the
    records left."""
    try:
        step()
    except Exception as e:
        if store_refused(e) is None:
            log.exception("stopping: %s failed; the stop goes on", what)
        else:
            log.warning(
                "stopping: %s failed: the store refused (%s); the stop goes on, and the next start "
                "settles what it could not record",
                what,
                refusals.said(e),
            )
