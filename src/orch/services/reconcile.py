"""Keeping services as their rows say. The store holds what should run (each service's desired
state, serving version and number of replicas, and a row per replica); `reconcile` compares it
with the engine's containers and acts, replica by replica: it adopts a running container of this
platform, restarts an exited one with exponential backoff (counting restarts, `crash-looping`
after quick crashes in a row), starts a missing one, and removes duplicates and orphans. A
replica is `running` (and the proxy sends it requests) once it answers on its port. The
supervisor (workers/supervisor.py) runs it every second, and the use cases that change a
service's desired state run it at once.

Several platforms may share a store: a pass acts only on the services whose lease this platform
holds or can take (services/leases.py). A replica whose container another platform started (the
service was taken over from it) gets a container on this platform's engine at once; a container
of this platform that no replica points at any more (its service went to another platform, or
was deleted) is removed.

What takes seconds (draining a container, stopping it with its SIGTERM grace) happens after
the pass has let go of the services' lock, which is every workspace's (services/takedown.py):
the containers a pass takes down are in hand meanwhile, not orphans to the next pass."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from orch.builder import registry
from orch.builder.host import ca_mounts, proxy_env
from orch.bundle import Manifest
from orch.engine.base import ContainerInfo, Mount
from orch.errors import DeployFailed, OrchError
from orch.models import DeploymentStatus, ServiceState, new_id
from orch.sandbox.layout import PYTHON_DEPS
from orch.sandbox.service_spec import PORT, ServiceLimits, container_spec
from orch.services import deployed_logs, leases, routing, takedown
from orch.services.platform import Platform
from orch.store.schema import ServiceDeploymentRow, ServiceReplicaRow, ServiceRow, utcnow

log = logging.getLogger(__name__)

BACKOFF_FIRST = 1.0  # seconds before the first restart; doubled at each quick crash in a row
BACKOFF_MAX = 60.0
QUICK = 30.0  # a container that ran less than this many seconds "crashed quickly"
CRASH_LOOP_AFTER = 3  # quick crashes in a row that make a replica crash-looping
PROBE_AGAIN = 0.25  # seconds until a started replica is asked again whether it answers
# A service's state is its worst replica's.
_WORST_FIRST = (
    ServiceState.CRASH_LOOPING,
    ServiceState.RESTARTING,
    ServiceState.STARTING,
    ServiceState.RUNNING,
)


# What a container prints (to stderr) when its run_command fails: the command never started.
RUN_COMMAND_FAILED = "orch: run_command failed"


def backoff(quick_crashes: int) -> float:
    return float(min(BACKOFF_FIRST * 2 ** max(quick_crashes - 1, 0), BACKOFF_MAX))


@dataclass(frozen=True)
class Version:
    """What a container of one version of a service runs (from its deployment)."""

    version: int
    image: str
    command: list[str]
    run_command: str | None
    manifest: Manifest
    digest: str | None = None  # where a machine that lacks `image` pulls it (a registry is set)
    deps_files: tuple[str, ...] = ()  # the dependency files its image installed (requirements.txt...)


def version_of(s: Session, service_id: str, version: int) -> Version | None:
    dep = s.scalar(
        select(ServiceDeploymentRow).where(
            ServiceDeploymentRow.service_id == service_id, ServiceDeploymentRow.version == version
        )
    )
    if dep is None or not dep.image:
        return None
    manifest = Manifest.model_validate_json(dep.manifest)
    command = json.loads(dep.command)
    deps_files = tuple(json.loads(dep.deps_files))
    return Version(version, dep.image, command, dep.run_command, manifest, dep.image_digest, deps_files)


def start_container(platform: Platform, svc: ServiceRow, v: Version) -> str:
    """Start a container of `svc` at version `v`; return its name (the caller records it). An
    image this machine lacks (another one built it) is pulled by its digest first."""
    if platform.engine.inspect_image(v.image) is None:
        log.info("service %s: pulling %s from the registry", svc.name, v.image)
        registry.ensure_image(platform.engine, platform.config, v.image, v.digest)
    name = f"{platform.container_prefix}{svc.id}-v{v.version}-{new_id('c')[2:8]}"
    resources = v.manifest.resources
    spec = container_spec(
        name=name,
        image=v.image,
        command=v.command,
        run_command=_reporting(v.run_command),
        env=_own_pythonpath_after_deps(
            {**proxy_env(platform.config), **v.manifest.env, "ORCH_SERVICE": svc.name}, v
        ),
        limits=ServiceLimits(resources.cpus, resources.memory_bytes, resources.pids),
        labels={**platform.service_labels(svc.id), "org.orch.version": str(v.version)},
        host_mounts=[Mount(h, c) for h, c in ca_mounts(platform.config).items()],
    )
    log_path = deployed_logs.container_log(platform, svc.id, name)
    platform.engine.start_container(spec, log_path, deployed_logs.MAX_CONTAINER_LOG)
    return name


def _own_pythonpath_after_deps(env: dict[str, str], v: Version) -> dict[str, str]:
    """`env`, with the service's own PYTHONPATH (orch.yaml's `env:`) after its dependencies' when
    its image installed a requirements.txt: the container's variable replaces the image's ENV,
    where the dependencies' directory is (service_spec.containerfile), so they were not found.
    Without an own PYTHONPATH the image's ENV stands, the base image's value after them."""
    if "requirements.txt" in v.deps_files and env.get("PYTHONPATH"):
        return {**env, "PYTHONPATH": f"{PYTHON_DEPS}:{env['PYTHONPATH']}"}
    return env


def _reporting(run_command: str | None) -> str | None:
    """`run_command`, saying so in the container's output if it fails: the shell runs it under
    `set -e`, so a failing step ends the shell, and the EXIT trap prints RUN_COMMAND_FAILED and
    the exit code; once it succeeded, the trap goes and the command replaces the shell."""
    if not run_command:
        return run_command
    report = f'c=$?; [ "$c" -eq 0 ] || echo "{RUN_COMMAND_FAILED} with exit code $c" >&2'
    return f"trap '{report}' EXIT\n{run_command}\ntrap - EXIT"


def replicas(s: Session, service_id: str) -> list[ServiceReplicaRow]:
    return list(
        s.scalars(
            select(ServiceReplicaRow)
            .where(ServiceReplicaRow.service_id == service_id)
            .order_by(ServiceReplicaRow.slot)
        )
    )


# Without services, the containers are listed this often (a `podman ps` costs tens of ms of CPU).
IDLE_LISTING = 60.0


def reconcile(platform: Platform, settle: bool = True) -> float | None:
    """One pass: make every service's containers what its rows say; return the seconds until
    the next thing due (a restart that waits out its backoff, a started replica to ask again
    whether it answers; None: nothing). A cluster's server passes nothing: the node that holds a
    service acts on its rows at its own supervisor's pass. The containers the pass takes down
    (a stopped service's, fewer replicas) are drained and removed once the lock is released:
    before it returns (`settle`), or in threads of their own (the supervisor's passes go on)."""
    if not platform.runs_work:
        return None
    takedowns: list[takedown.Takedown] = []
    try:
        with platform.services_lock:
            held = leases.take(platform)
            if _idle(platform):
                return None
            platform.services_listed_at = time.monotonic()
            # Before the listing: a container let go of since is gone from it too.
            keep: set[str] = takedown.in_hand(platform).names()
            containers = {c.name: c for c in platform.engine.list_containers(platform.service_labels())}
            stored: set[str] = set()  # the containers whose output this pass stored
            due: float | None = None
            moved = False  # whether a route changed (the proxy's, services/routing.py)
            with platform.store.session() as s:
                # A deployment that is starting (or rolling out) its containers: they are not orphans,
                # and the number of the service's replicas is its to change.
                starting = s.scalars(
                    select(ServiceDeploymentRow).where(
                        ServiceDeploymentRow.status == DeploymentStatus.STARTING.value
                    )
                ).all()
                keep.update(d.container for d in starting if d.container)
                # What any replica points at stays, the services this platform does not hold too: their
                # holder replaces them with its own first (then they are orphans here).
                keep.update(c for c in s.scalars(select(ServiceReplicaRow.container)) if c)
                rolling = {d.service_id for d in starting}
                for svc in s.scalars(select(ServiceRow)).all():
                    if svc.id not in held.ids or _deployed_elsewhere(platform, s, svc, starting, held):
                        continue
                    rows = replicas(s, svc.id)
                    before = _routes(svc, rows)
                    rows = _reconcile_service(
                        platform, s, svc, rows, containers, svc.id in rolling, takedowns
                    )
                    moved = moved or _routes(svc, rows) != before
                    for r in rows:
                        if r.container:
                            keep.add(r.container)
                            deployed_logs.ship(platform, s, svc.id, r.container)
                            stored.add(r.container)
                        wait = _due(r)
                        if wait is not None:
                            due = wait if due is None else min(due, wait)
                # A duplicate, or left by a deleted service or a failed deploy: removed once this
                # pass is committed (Podman takes its time; neither the store nor the lock is held).
                orphans = [
                    (c, _orphaned(platform, s, c)) for name, c in containers.items() if name not in keep
                ]
                # The files of containers this server no longer stores (another holds their service) go.
                deployed_logs.keep_only(platform, stored | {d.container for d in starting if d.container})
            platform.services_seen = bool(containers or keep)  # keep: what this pass started too
    except BaseException:  # nothing was let go of in the store: out of hand again
        for t in takedowns:
            takedown.in_hand(platform).release(t.containers)
        raise
    if moved or takedowns:
        routing.of(platform).changed()
    threads = [t.start() for t in takedowns]
    for c, deleted_service in orphans:
        log.info("removing container %s (not what any service should run)", c.name)
        platform.engine.remove_container(c.name, timeout=5)
        if deleted_service:  # deleted through a cluster's server: its images here go too
            remove_images(platform, deleted_service)
    if settle:
        for thread in threads:
            thread.join()
    return due


def _idle(platform: Platform) -> bool:
    """Whether a pass has nothing to do: no service in the store, no deploy under way, and the
    last listing (less than IDLE_LISTING ago) found none of the platform's service containers.
    A container can only appear through a deploy (a row first) or at a start (the first pass
    lists); one left by a deleted service was in the last listing, and is listed until gone."""
    if platform.services_seen or time.monotonic() - platform.services_listed_at >= IDLE_LISTING:
        return False
    with platform.store.session() as s:
        return not s.scalar(select(exists().where(ServiceRow.id.is_not(None)))) and not s.scalar(
            select(exists().where(ServiceDeploymentRow.status == DeploymentStatus.STARTING.value))
        )


def _orphaned(platform: Platform, s: Session, c: ContainerInfo) -> str | None:
    """A container no replica points at, about to be removed: what it printed since the last
    pass is stored, while its service is there (a cluster's server restarted the service, or a
    server killed mid-switch left the old container). Return its service's id if the service
    was deleted (through a cluster's server, which reaches no node's engine): its images go too."""
    service_id = c.labels.get("org.orch.service")
    if not service_id:
        return None
    if s.get(ServiceRow, service_id) is None:
        return service_id
    deployed_logs.archive(platform, s, service_id, c.name)
    return None


def remove_images(platform: Platform, service_id: str) -> None:
    """Remove a deleted service's images from this machine (built here, or pulled)."""
    for image in platform.engine.images({"org.orch.service": service_id}):
        for tag in image.tags or (image.id,):
            platform.engine.remove_image(tag)


def _deployed_elsewhere(
    platform: Platform,
    s: Session,
    svc: ServiceRow,
    starting: Sequence[ServiceDeploymentRow],
    held: leases.Held,
) -> bool:
    """Whether another platform's deploy worker is switching `svc` to a new version: then this
    platform hands it the lease (the deploy worker waits for it) and leaves the service alone.
    A deployment of the platform this one just took the service over from is not under way any
    more (a deploy worker renews the lease it holds): it failed, and is recorded so."""
    dep = next((d for d in starting if d.service_id == svc.id and d.claimed_by), None)
    deployer = dep.claimed_by if dep is not None else None
    if dep is None or deployer is None or deployer == platform.instance:
        return False
    if held.taken_from.get(svc.id) == deployer:
        message = (
            f"The server deploying it ({deployer}) stopped renewing the service's lease "
            "half-way; another server took the service over."
        )
        log.warning("service %s: v%d %s", svc.name, dep.version, message)
        dep.status, dep.error, dep.finished_at = DeploymentStatus.FAILED.value, message, utcnow()
        dep.container = None
        svc.error = f"v{dep.version} was not deployed: {message}"
        if svc.version == 0:
            svc.state = ServiceState.FAILED.value
        return False
    leases.hand_over(s, platform, svc.id, deployer)
    log.info("service %s: handing it over to %s, which deploys v%d", svc.name, deployer, dep.version)
    return True


def _routes(svc: ServiceRow, rows: list[ServiceReplicaRow]) -> object:
    return svc.state, [(r.slot, r.state, r.container, r.address) for r in rows]


def _due(r: ServiceReplicaRow) -> float | None:
    if r.state == ServiceState.STARTING.value and r.container:
        return PROBE_AGAIN
    if r.container is None and r.next_start_at is not None:
        return (r.next_start_at - utcnow()).total_seconds()
    return None


def _reconcile_service(
    platform: Platform,
    s: Session,
    svc: ServiceRow,
    rows: list[ServiceReplicaRow],
    containers: dict[str, ContainerInfo],
    rolling: bool,
    takedowns: list[takedown.Takedown],
) -> list[ServiceReplicaRow]:
    """Make one service's replicas what its row says; return them as they are now. The
    containers to take down go on `takedowns` (claimed: taken down after the commit)."""
    if svc.desired == "stopped":
        gone = [r.container for r in rows]
        takedowns.append(takedown.claim(platform, svc.id, gone, routing.GOING_AWAY, routing.STOPPED))
        for r in rows:
            s.delete(r)
        svc.state = ServiceState.STOPPED.value
        return []
    if svc.version == 0 or not svc.image:
        return rows  # its first deployment is under way, or failed
    if not rolling:
        want = Manifest.model_validate_json(svc.manifest).replicas
        extra = [r for r in rows if r.slot >= want]  # left by a deploy cut short
        if extra:
            gone = [r.container for r in extra]
            takedowns.append(takedown.claim(platform, svc.id, gone, routing.GOING_AWAY, "fewer replicas"))
            for r in extra:
                s.delete(r)
        rows = [r for r in rows if r.slot < want]
        present = {r.slot for r in rows}
        for slot in range(want):
            if slot not in present:
                row = ServiceReplicaRow(
                    service_id=svc.id, slot=slot, version=svc.version, state=ServiceState.STARTING.value
                )
                row.quick_crashes = 0
                s.add(row)
                rows.append(row)
        rows.sort(key=lambda r: r.slot)
    for r in rows:
        try:
            _reconcile_replica(platform, s, svc, r, containers)
        except OrchError as e:  # e.g. the engine could not start it: retry after a backoff
            log.warning("service %s, replica %d: %s", svc.name, r.slot, e)
            svc.error = e.message
            r.quick_crashes += 1
            r.next_start_at = utcnow() + timedelta(seconds=backoff(r.quick_crashes))
            r.state = _exited_state(r)
    states = {r.state for r in rows}
    svc.state = next((st.value for st in _WORST_FIRST if st.value in states), ServiceState.STARTING.value)
    return rows


def _exited_state(r: ServiceReplicaRow) -> str:
    crash_looping = r.quick_crashes >= CRASH_LOOP_AFTER
    return (ServiceState.CRASH_LOOPING if crash_looping else ServiceState.RESTARTING).value


def _reconcile_replica(
    platform: Platform,
    s: Session,
    svc: ServiceRow,
    r: ServiceReplicaRow,
    containers: dict[str, ContainerInfo],
) -> None:
    now = utcnow()
    if r.container and not r.container.startswith(platform.container_prefix):
        # Another platform's container: this one took the service over (the other stopped
        # renewing its lease), and can neither see nor remove it. One of its own replaces it at
        # once; no crash is counted (the service did not crash, its supervisor went away).
        log.info("service %s replica %d: taken over from %s", svc.name, r.slot, r.container)
        routing.of(platform).gone([r.container])
        r.container, r.address, r.next_start_at = None, None, None
    current = containers.get(r.container) if r.container else None
    if current is not None and current.running:
        ran = (now - r.started_at).total_seconds() if r.started_at else QUICK
        if ran >= QUICK:
            r.quick_crashes = 0
        if not r.address:
            r.address = platform.engine.container_address(current.name)
        _settle(platform, r)
        return
    if r.container:  # it exited (or vanished): record how, then restart after the backoff
        ran = (now - r.started_at).total_seconds() if r.started_at else 0.0
        svc.last_exit = current.exit_code if current is not None else None
        svc.last_output = deployed_logs.archive(platform, s, svc.id, r.container)
        # Also when it vanished: the engine may keep leftovers of it (its cgroups).
        platform.engine.remove_container(r.container, timeout=0)
        routing.of(platform).gone([r.container])
        r.quick_crashes = r.quick_crashes + 1 if ran < QUICK else 1
        svc.restarts += 1
        r.container, r.address = None, None
        r.next_start_at = now + timedelta(seconds=backoff(r.quick_crashes))
        r.state = _exited_state(r)
        log.info(
            "service %s replica %d exited (%s); restarting in %.0f s",
            svc.name,
            r.slot,
            svc.last_exit,
            backoff(r.quick_crashes),
        )
        return
    if r.next_start_at is not None and now < r.next_start_at:
        return
    version = version_of(s, svc.id, r.version) or version_of(s, svc.id, svc.version)
    if version is None:  # its version's deployment is gone: run what serves
        raise DeployFailed(f"v{r.version} of {svc.name} has no image to start.", "Deploy it again.")
    r.version = version.version
    r.container = start_container(platform, svc, version)
    r.started_at, r.next_start_at = utcnow(), None
    r.address = platform.engine.container_address(r.container)
    r.state = ServiceState.STARTING.value
    _settle(platform, r)


def _settle(platform: Platform, r: ServiceReplicaRow) -> None:
    """A running replica's state: running once it answers on its port (then the proxy sends it
    requests), crash-looping while its quick crashes say so, else starting."""
    looping = r.quick_crashes >= CRASH_LOOP_AFTER
    answers = r.state in (ServiceState.RUNNING.value, ServiceState.CRASH_LOOPING.value) or bool(
        r.address and platform.probe(r.address, PORT)
    )
    if looping:
        r.state = ServiceState.CRASH_LOOPING.value
    elif answers:
        r.state = ServiceState.RUNNING.value
    else:
        r.state = ServiceState.STARTING.value
