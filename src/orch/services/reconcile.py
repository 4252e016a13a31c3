"""Keeping services as their rows say. The store holds what should run (each service's desired
state and serving version); `reconcile` compares it with the engine's containers and acts: it
adopts a running container of this platform, restarts an exited one with exponential backoff
(counting restarts, `crash-looping` after quick crashes in a row), starts a missing one, and
removes duplicates and orphans. The supervisor (workers/supervisor.py) runs it every second, and
the use cases that change a service's desired state run it at once."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from sqlalchemy import select

from orch.builder.host import ca_mounts, proxy_env
from orch.bundle import Manifest
from orch.engine.base import ContainerInfo, Mount
from orch.errors import OrchError
from orch.models import DeploymentStatus, ServiceState, new_id
from orch.sandbox.service_spec import ServiceLimits, container_spec
from orch.services import deployed_logs
from orch.services.platform import Platform
from orch.store.schema import ServiceDeploymentRow, ServiceRow, utcnow

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0  # seconds before the first restart; doubled at each quick crash in a row
BACKOFF_MAX = 60.0
QUICK = 30.0  # a container that ran less than this many seconds "crashed quickly"
CRASH_LOOP_AFTER = 3  # quick crashes in a row that make a service crash-looping


def backoff(quick_crashes: int) -> float:
    return float(min(BACKOFF_FIRST * 2 ** max(quick_crashes - 1, 0), BACKOFF_MAX))


def start_container(
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
        labels={**platform.service_labels(svc.id), "org.orch.version": str(version)},
        host_mounts=[Mount(h, c) for h, c in ca_mounts(platform.config).items()],
    )
    log_path = deployed_logs.container_log(platform, svc.id, name)
    platform.engine.start_container(spec, log_path, deployed_logs.MAX_CONTAINER_LOG)
    return name


def reconcile(platform: Platform) -> float | None:
    """One pass: make every service's containers what its row says; return the seconds until
    the next restart that waits out its backoff (None: none waits)."""
    with platform.services_lock:
        containers = {c.name: c for c in platform.engine.list_containers(platform.service_labels())}
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
            deployed_logs.archive(platform, svc.id, svc.container)
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
        svc.last_output = deployed_logs.archive(platform, svc.id, svc.container)
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
    command = json.loads(svc.command)
    name = start_container(platform, svc, svc.image, command, svc.run_command, manifest, svc.version)
    svc.container, svc.started_at, svc.next_start_at = name, utcnow(), None
    svc.address = platform.engine.container_address(name)
    if svc.quick_crashes < CRASH_LOOP_AFTER:
        svc.state = ServiceState.RUNNING.value
