"""Keeping services running. The store holds what should run (each service's desired state and
serving version); a supervisor thread compares it with the engine's containers every second and
acts: it adopts a running container of this platform, restarts an exited one with exponential
backoff (counting restarts, `crash-looping` after quick crashes in a row), starts a missing one,
and removes duplicates and orphans. So after a server restart, exactly what should run runs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import select

from orch.builder.host import ca_mounts, proxy_env
from orch.bundle import Manifest
from orch.engine.base import ContainerInfo, Mount
from orch.errors import OrchError
from orch.models import new_id
from orch.sandbox.service import ServiceLimits, container_spec
from orch.services import service_logs
from orch.services.platform import Platform
from orch.services.service_views import DeploymentStatus, ServiceState
from orch.store.schema import ServiceDeploymentRow, ServiceRow, utcnow

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0  # seconds before the first restart; doubled at each quick crash in a row
BACKOFF_MAX = 60.0
QUICK = 30.0  # a container that ran less than this many seconds "crashed quickly"
CRASH_LOOP_AFTER = 3  # quick crashes in a row that make a service crash-looping
SWEEP_EVERY = 60.0  # seconds between sweeps of what gone containers left in the engine

_locks: dict[str, threading.RLock] = {}
_wakes: dict[str, threading.Event] = {}
_registry_lock = threading.Lock()


@contextmanager
def locked(platform: Platform) -> Iterator[None]:
    """One writer at a time of a platform's services and their containers (supervisor, deploy
    worker, API): a switch of versions never meets a restart half-way."""
    with _registry_lock:
        lock = _locks.setdefault(platform.instance, threading.RLock())
    with lock:
        yield


def wake_event(platform: Platform) -> threading.Event:
    with _registry_lock:
        return _wakes.setdefault(platform.instance, threading.Event())


def wake(platform: Platform) -> None:
    wake_event(platform).set()


def labels(platform: Platform, service_id: str | None = None) -> dict[str, str]:
    found = {**platform.labels, "org.orch.kind": "service"}
    if service_id:
        found["org.orch.service"] = service_id
    return found


def backoff(quick_crashes: int) -> float:
    return float(min(BACKOFF_FIRST * 2 ** max(quick_crashes - 1, 0), BACKOFF_MAX))


def start(
    platform: Platform,
    svc: ServiceRow,
    image: str,
    command: list[str],
    run_command: str | None,
    manifest: Manifest,
    version: int,
) -> str:
    """Start a container of `svc` at `version`; return its name (the caller records it)."""
    name = f"{platform.container_prefix}{svc.id}-v{version}-{new_id('c')[2:8]}"
    spec = container_spec(
        name=name,
        image=image,
        command=command,
        run_command=run_command,
        env={**proxy_env(platform.config), **manifest.env, "ORCH_SERVICE": svc.name},
        limits=ServiceLimits(
            manifest.resources.cpus, manifest.resources.memory_bytes, manifest.resources.pids
        ),
        labels={**labels(platform, svc.id), "org.orch.version": str(version)},
        host_mounts=[Mount(h, c) for h, c in ca_mounts(platform.config).items()],
    )
    log_path = service_logs.container_log(platform, svc.id, name)
    platform.engine.start_container(spec, log_path, service_logs.MAX_CONTAINER_LOG)
    return name


def reconcile(platform: Platform) -> float | None:
    """One pass: make every service's containers what its row says; return the seconds until
    the next restart that waits out its backoff (None: none waits)."""
    with locked(platform):
        containers = {c.name: c for c in platform.engine.list_containers(labels(platform))}
        keep: set[str] = set()
        due: float | None = None
        with platform.store.session() as s:
            candidates = s.scalars(
                select(ServiceDeploymentRow.container).where(
                    ServiceDeploymentRow.status == DeploymentStatus.STARTING.value
                )
            ).all()
            keep.update(c for c in candidates if c)
            for svc in s.scalars(select(ServiceRow)).all():
                try:
                    _reconcile_one(platform, svc, containers)
                except OrchError as e:  # e.g. the engine could not start it: retry after a backoff
                    log.warning("service %s: %s", svc.name, e)
                    svc.error = e.message
                    svc.quick_crashes += 1
                    svc.next_start_at = utcnow() + timedelta(seconds=backoff(svc.quick_crashes))
                if svc.container:
                    keep.add(svc.container)
                elif svc.next_start_at is not None and svc.desired == "running":
                    wait = (svc.next_start_at - utcnow()).total_seconds()
                    due = wait if due is None else min(due, wait)
        for name, c in containers.items():
            if name not in keep:  # a duplicate, or left by a deleted service or a failed deploy
                log.info("removing container %s (not what any service should run)", name)
                platform.engine.remove_container(c.name, timeout=5)
    return due


def _reconcile_one(platform: Platform, svc: ServiceRow, containers: dict[str, ContainerInfo]) -> None:
    now = utcnow()
    current = containers.get(svc.container) if svc.container else None
    if svc.desired == "stopped":
        if svc.container:
            _archive(platform, svc, current)
            platform.engine.remove_container(svc.container)
            svc.container, svc.address = None, None
        svc.state = ServiceState.STOPPED.value
        return
    if svc.version == 0 or not svc.image:
        return  # its first deployment is under way, or failed
    if current is not None and current.running:
        ran = (now - svc.started_at).total_seconds() if svc.started_at else QUICK
        if ran >= QUICK:
            svc.quick_crashes = 0
        if svc.quick_crashes < CRASH_LOOP_AFTER:
            svc.state = ServiceState.RUNNING.value
        if not svc.address:
            svc.address = platform.engine.container_address(current.name)
        return
    if svc.container:  # it exited (or vanished): record how, then restart after the backoff
        ran = (now - svc.started_at).total_seconds() if svc.started_at else 0.0
        svc.last_exit = current.exit_code if current is not None else None
        svc.last_output = _archive(platform, svc, current)
        # Also when it vanished: the engine may keep leftovers of it (its cgroups).
        platform.engine.remove_container(svc.container, timeout=0)
        svc.quick_crashes = svc.quick_crashes + 1 if ran < QUICK else 1
        svc.restarts += 1
        svc.container, svc.address = None, None
        svc.next_start_at = now + timedelta(seconds=backoff(svc.quick_crashes))
        crash_looping = svc.quick_crashes >= CRASH_LOOP_AFTER
        svc.state = (ServiceState.CRASH_LOOPING if crash_looping else ServiceState.RESTARTING).value
        wait = backoff(svc.quick_crashes)
        log.info("service %s exited (%s); restarting in %.0f s", svc.name, svc.last_exit, wait)
        return
    if svc.next_start_at is not None and now < svc.next_start_at:
        return
    manifest = Manifest.model_validate_json(svc.manifest)
    name = start(platform, svc, svc.image, json.loads(svc.command), svc.run_command, manifest, svc.version)
    svc.container, svc.started_at, svc.next_start_at = name, utcnow(), None
    svc.address = platform.engine.container_address(name)
    if svc.quick_crashes < CRASH_LOOP_AFTER:
        svc.state = ServiceState.RUNNING.value


def _archive(platform: Platform, svc: ServiceRow, current: ContainerInfo | None) -> str:
    if not svc.container:
        return ""
    return service_logs.archive(platform, svc.id, svc.container)


def sweep(platform: Platform) -> int:
    """Remove what this platform's gone containers (runs' and services') left in the engine: a
    server killed while it removed one leaves its cgroups behind."""
    swept = platform.engine.remove_leftovers(platform.container_prefix)
    if swept:
        log.info("removed the leftovers of %d gone containers", swept)
    return swept


class Supervisor:
    """The supervisor thread and the deploy worker thread of one platform."""

    def __init__(self, platform: Platform, poll: float = 1.0) -> None:
        self.platform = platform
        self.poll = poll
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        from orch.services import service_worker

        service_worker.recover(self.platform)
        sweep(self.platform)
        for name, target in (("orch-supervisor", self._supervise), ("orch-deploy", self._deploy)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _supervise(self) -> None:
        event = wake_event(self.platform)
        next_sweep = time.monotonic() + SWEEP_EVERY
        while not self._stop.is_set():
            due = None
            try:
                due = reconcile(self.platform)
                if time.monotonic() >= next_sweep:
                    sweep(self.platform)
                    next_sweep = time.monotonic() + SWEEP_EVERY
            except Exception:
                log.exception("supervising services failed")
            # A restart whose backoff ends before the next poll happens on time, not at the poll.
            event.wait(self.poll if due is None else max(0.01, min(self.poll, due)))
            event.clear()

    def _deploy(self) -> None:
        from orch.services import service_worker

        while not self._stop.is_set():
            try:
                deployment = service_worker.claim(self.platform)
            except Exception:
                log.exception("claiming a deployment failed")
                deployment = None
            if deployment is None:
                self._stop.wait(self.poll / 2)
                continue
            service_worker.execute(self.platform, deployment, self._stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads; the services' containers keep running (they outlive the server)."""
        self._stop.set()
        wake(self.platform)
        for t in self._threads:
            t.join(timeout)
