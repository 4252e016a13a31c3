"""Deploying a version of a service: build its image (the bundle plus its dependencies, once),
then replace its replicas one at a time: start a new container next to the one that serves,
wait until it answers on PORT, switch the replica to it, drain and stop the old one. A version
that does not come up is removed, the replicas already replaced get the old version back, and
the old version keeps serving.

With a registry set, the image is pushed once built and its digest recorded, so a machine that
lacks it pulls it. Before it starts containers, the worker takes the service's lease
(services/leases.py), as a supervisor does: a supervisor of another platform that holds it hands
it over at its next pass and leaves the service alone while this worker switches versions; the
worker renews it through the rollout and stops (the deployment failed) if it could not."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import update
from sqlalchemy.orm import Session

from orch import metrics
from orch.builder import base_images, registry
from orch.builder.host import ca_mounts, proxy_env
from orch.bundle import Manifest
from orch.engine.base import BuildRequest
from orch.errors import DeployFailed, OrchError, store_full, store_refused
from orch.kept import kept
from orch.models import BuildStatus, DeploymentStatus, ServiceState
from orch.sandbox.service_spec import PORT, containerfile
from orch.services import base_digests, build_log, deployed_logs, images, leases, nodes, routing, takedown
from orch.services.bundles import extracted as extracted_bundle
from orch.services.platform import Platform
from orch.services.reconcile import RUN_COMMAND_FAILED, Version, replicas, start_container, version_of
from orch.store import queue, refusals
from orch.store.queue import left_by
from orch.store.schema import (
    BuildRow,
    EnvironmentRow,
    ServiceDeploymentRow,
    ServiceReplicaRow,
    ServiceRow,
    utcnow,
)

log = logging.getLogger(__name__)


def claim(platform: Platform) -> str | None:
    """Move the oldest queued deployment to "building" and return its id (None: queue empty,
    or, on a cluster's node, left for a moment to a node that runs fewer services). What a
    refusing store did not take of earlier deployments is asked again first (`settle_held`)."""
    settle_held(platform)
    if platform.node is not None and not nodes.takes_deployment(platform):
        return None
    return queue.claim(
        platform.store,
        ServiceDeploymentRow,
        DeploymentStatus.QUEUED,
        DeploymentStatus.BUILDING,
        platform.instance,
    )


def recover(platform: Platform) -> None:
    """At start: a deployment a stopped server left half-way is queued again (its container, if
    any, is an orphan the supervisor removes)."""
    with platform.store.session() as s:
        s.execute(
            update(ServiceDeploymentRow)
            .where(
                ServiceDeploymentRow.status.in_(
                    [DeploymentStatus.BUILDING.value, DeploymentStatus.STARTING.value]
                ),
                left_by(ServiceDeploymentRow, platform.instance),
            )
            .values(status=DeploymentStatus.QUEUED.value, container=None)
        )


class _Interrupted(Exception):
    """The server is stopping: the new version's build was stopped, with what it started."""


def execute(platform: Platform, dep_id: str, stop: threading.Event | None = None) -> None:
    """Take a claimed deployment to its end; every outcome is recorded, none raises. Once `stop`
    is set (the server stops), a running build of the new version is stopped with everything it
    started, and the deployment is queued again, as the next start would queue it. A store that
    refuses under way has the deployment queued again (at most refusals.REQUEUES times, then it
    fails); what is recorded then is asked again until the store takes it (`_record`)."""
    stop = stop or threading.Event()
    tail: list[str] = []
    try:
        _execute(platform, dep_id, tail, stop)
    except _Interrupted:
        log.info("deployment %s stopped: the server is stopping; it was queued again", dep_id)
        _record(platform, dep_id, "queue it again", lambda: _requeue(platform, dep_id), stop)
        return
    except OrchError as e:
        message = e.message
    except Exception as e:  # a bug must fail the deployment, not the worker
        if store_refused(e) is not None:
            _refused(platform, dep_id, e, tail, stop)
            return
        if (full := store_full(e)) is not None:  # the disk under ORCH_HOME (its bundle's files)
            log.warning("deployment %s: %s", dep_id, full.message)
            message = f"{full.message} {full.fix}"
        else:
            log.exception("deployment %s crashed", dep_id)
            message = f"internal error: {type(e).__name__}"
    else:
        _writes(platform).ended(dep_id)
        metrics.of(platform).deployment_finished("ready")
        return
    _writes(platform).ended(dep_id)
    metrics.of(platform).deployment_finished("failed")
    _record(platform, dep_id, "record its failure", lambda: _fail(platform, dep_id, message, tail), stop)


def _refused(platform: Platform, dep_id: str, e: Exception, tail: list[str], stop: threading.Event) -> None:
    """The store refused the deployment under way: queue it again, or fail it once it was queued
    again refusals.REQUEUES times for that already."""
    why = refusals.said(e)
    if _writes(platform).requeue(dep_id) is not None:
        log.warning("deployment %s: the store refused it under way (%s); it is queued again", dep_id, why)
        _record(platform, dep_id, "queue it again", lambda: _requeue(platform, dep_id), stop)
        return
    log.warning("deployment %s: the store refused it under way again (%s); it fails", dep_id, why)
    message = (
        f"The store did not answer during the deployment ({why}), {refusals.REQUEUES + 1} times in a row. "
        "Check that the database answers, then deploy again."
    )
    metrics.of(platform).deployment_finished("failed")
    _record(platform, dep_id, "record its failure", lambda: _fail(platform, dep_id, message, tail), stop)


def _requeue(platform: Platform, dep_id: str) -> None:
    """Queue the deployment again, its claim cleared, if it is still this platform's and under way."""
    with platform.store.session() as s:
        s.execute(
            update(ServiceDeploymentRow)
            .where(
                ServiceDeploymentRow.id == dep_id,
                ServiceDeploymentRow.status.in_(
                    [DeploymentStatus.BUILDING.value, DeploymentStatus.STARTING.value]
                ),
                ServiceDeploymentRow.claimed_by == platform.instance,
            )
            .values(status=DeploymentStatus.QUEUED.value, container=None, claimed_by=None)
        )
    platform.wake_deploys.set()


def _record(
    platform: Platform, dep_id: str, what: str, record: Callable[[], None], stop: threading.Event
) -> None:
    """`record` (the deployment queued again, or failed), asked of a refusing store until it
    takes it (refusals.Writes); once `stop` is set, no more: the next start queues it again."""
    _writes(platform).write(dep_id, what, record, stop)


def _writes(platform: Platform) -> refusals.Writes:
    return kept(platform, "_unsettled_deployments", lambda: refusals.Writes("deployment", log))


def settle_held(platform: Platform) -> int:
    """Ask the store again for what it refused of deployments past refusals.PAUSES (at each pass
    of the deploy queue); how many it took."""
    return _writes(platform).settle_writes(platform.stopping)


def _execute(platform: Platform, dep_id: str, tail: list[str], stop: threading.Event) -> None:
    with platform.store.session() as s:
        dep = s.get(ServiceDeploymentRow, dep_id)
        assert dep is not None
        svc = s.get(ServiceRow, dep.service_id)
        assert svc is not None
        service_id, name, version, bundle_sha = svc.id, svc.name, dep.version, dep.bundle_sha256
        deps_files = json.loads(dep.deps_files)
        command, run_command = json.loads(dep.command), dep.run_command
        manifest = Manifest.model_validate_json(dep.manifest)
        environment_id = dep.environment_id

    def out(line: str) -> None:
        tail.append(build_log.without_host_path(line))  # shown to the workspace: no host path
        del tail[:-40]

    if environment_id is None:
        digests = base_digests.known(platform.store) if platform.config.registry else {}
        base_images.ensure(platform.engine, platform.config, out, ["service-runner"], digests=digests)
        base = base_images.image_tag("service-runner")
    else:
        base = _environment_image(platform, environment_id, out, stop)
    tag = images.service_tag(platform, service_id, name, version)
    request = BuildRequest(
        containerfile=containerfile(base, deps_files, own_dockerfile=environment_id is not None),
        tag=tag,
        labels={**platform.service_labels(service_id), "org.orch.version": str(version)},
        mounts=ca_mounts(platform.config),
        build_args=proxy_env(platform.config),
        timeout=float(platform.config.build_timeout),
        context=extracted_bundle(platform, bundle_sha),
        owner=platform.instance,
        max_size=int(platform.config.build_max_size),  # while it runs (docs/environments.md#disk)
        disk_reserve=int(platform.config.build_disk_reserve),
        memory=int(platform.config.build_memory),  # its steps run the bundle's installs
        pids=int(platform.config.build_pids),
    )
    started = time.monotonic()
    try:
        platform.engine.build(request, out, should_stop=stop.is_set)
    except OrchError as e:
        if e.details.get("stopped") and stop.is_set():
            raise _Interrupted from None
        metrics.of(platform).build_finished("failed", time.monotonic() - started, kind="service")
        raise DeployFailed(f"Building v{version} failed: {e.message}", "See the deployment's log.") from None
    metrics.of(platform).build_finished("ready", time.monotonic() - started, kind="service")
    digest = _push(platform, tag, out)
    new = Version(version, tag, command, run_command, manifest, digest, tuple(deps_files))
    with platform.services_lock, platform.store.session() as s:
        _service(s, service_id)
        s.execute(
            update(ServiceDeploymentRow)
            .where(ServiceDeploymentRow.id == dep_id)
            .values(status=DeploymentStatus.STARTING.value, image=tag, image_digest=digest)
        )
    # "starting" (and claimed by this platform) is what another platform's supervisor hands the
    # lease over for.
    lease = leases.Kept(platform, service_id)
    if not lease.acquire(stop):
        if stop.is_set():
            raise _Interrupted
        raise DeployFailed(
            f"Another server ({leases.holder(platform, service_id) or 'unknown'}) supervises {name} "
            "and did not hand it over for the deployment.",
            "Deploy again; if it happens again, check that every server of the store runs this "
            "version of orch.",
        )
    with platform.services_lock, platform.store.session() as s:
        svc = _service(s, service_id)
        old = version_of(s, service_id, svc.version) if svc.version else None
        slots = {r.slot: r.version for r in replicas(s, service_id)}
    rollout = Rollout(platform, dep_id, service_id, name, stop, lease)
    try:
        # One replica at a time: the new one answers before the old one goes (a surge of one).
        for slot in range(max(manifest.replicas, max(slots, default=-1) + 1)):
            if rollout.stopped(new):  # during the deployment: it starts no more containers
                out(f"{name} was stopped during the deployment: v{version} is current; it stays stopped.")
                break
            if slot >= manifest.replicas:
                rollout.retire(slot, f"{name} v{version} has fewer replicas")
            elif slots.get(slot) != version:  # (one at this version: a deploy run again after a kill)
                rollout.replace(slot, new, switch=not rollout.replaced)
    except DeployFailed:
        rollout.roll_back(old, slots)
        raise
    with platform.services_lock, platform.store.session() as s:
        dep_row = s.get(ServiceDeploymentRow, dep_id)
        assert dep_row is not None
        dep_row.status, dep_row.finished_at = DeploymentStatus.READY.value, utcnow()
        dep_row.container, dep_row.log_tail = None, "\n".join(tail)
    # Every earlier version's image of this service goes, not only the one it served before:
    # a deployment run again after a kill that came past its switch finds itself the one served,
    # and the version before it (its container still up at that start) stayed for good.
    try:
        earlier = [i for i in platform.engine.images({"org.orch.service": service_id}) if tag not in i.tags]
    except OrchError as e:
        log.warning("listing the earlier versions of %s: %s", name, e)
        earlier = []
    for image in earlier:
        for ref in image.tags or (image.id,):
            try:
                platform.engine.remove_image(ref)
            except OrchError as e:  # v{version} serves already: not a failed deployment
                log.warning("removing an earlier version of %s: %s", name, e)
    platform.wake_supervisor.set()


def _push(platform: Platform, tag: str, out: Callable[[str], None]) -> str | None:
    """Push the service's image to the registry, if one is set, and return its digest reference.
    A failed push fails the deployment (as it fails an environment's build, workers/builds.py):
    a version that only this machine can start would fail later, on another, far from the cause."""
    try:
        return registry.push_built(platform.engine, platform.config, tag, out)
    except OrchError as e:
        raise DeployFailed(
            f"The image of the new version was built but not pushed to the registry, so other "
            f"machines cannot run it: {e.message}",
            e.fix or "Check that the registry is up and reachable, then deploy again.",
        ) from None


def _environment_image(
    platform: Platform, environment_id: str, out: Callable[[str], None], stop: threading.Event
) -> str:
    """The image of the environment built from the bundle's Dockerfile, once its build (by the
    build worker, with the environments' cache) is done; pulled by its digest if another machine
    built it."""
    said = False
    deadline = time.monotonic() + float(platform.config.build_timeout) + 60
    while time.monotonic() < deadline and not stop.is_set():
        with platform.store.session() as s:
            env = s.get(EnvironmentRow, environment_id)
            if env is None:
                raise DeployFailed("The environment built from the Dockerfile was deleted.", "Deploy again.")
            build = s.get(BuildRow, env.build_id) if env.build_id else None
            name, status = env.name, build.status if build is not None else None
            image, error = (build.image, build.error) if build is not None else (None, None)
            digest = build.image_digest if build is not None else None
        if status == BuildStatus.READY.value and image:
            out(f"Dockerfile: environment {name} ({image})")
            if platform.engine.inspect_image(image) is None:
                out(f"Pulling {image} from the registry")
                registry.ensure_image(platform.engine, platform.config, image, digest)
            return image
        if status == BuildStatus.FAILED.value or status is None:
            # The deployment keeps the message only: where to look is said in it.
            why = (error or "no build").rstrip(". ")
            raise DeployFailed(
                f"Building the Dockerfile (environment {name}) failed: {why}. `orch env logs {name}` "
                "shows its log.",
                "Fix the Dockerfile, and deploy again.",
            )
        if not said:
            out(f"Dockerfile: waiting for environment {name} to be built")
            said = True
        time.sleep(0.5)
    if stop.is_set():
        raise _Interrupted
    raise DeployFailed("The Dockerfile's build did not end in time.", "Deploy again.")


def _service(s: Session, service_id: str) -> ServiceRow:
    svc = s.get(ServiceRow, service_id)
    if svc is None:
        raise DeployFailed("The service was deleted during its deployment.", "")
    return svc


@dataclass
class Rollout:
    """A deployment's containers, replaced one replica (slot) at a time."""

    platform: Platform
    dep_id: str
    service_id: str
    name: str
    stop: threading.Event
    lease: leases.Kept  # the service's, held through the rollout
    replaced: list[int] = field(default_factory=list)  # slots moved to the new version so far
    added: list[int] = field(default_factory=list)  # of those, slots that had no replica before
    old_service: dict[str, object] = field(default_factory=dict)  # the row's fields before the switch

    def stopped(self, v: Version) -> bool:
        """Whether the service was stopped during the deployment (`orch service stop`, which
        sticks); then `v` is its current version from now, if no replica switched to it yet."""
        with self.platform.services_lock, self.platform.store.session() as s:
            svc = _service(s, self.service_id)
            dep = s.get(ServiceDeploymentRow, self.dep_id)
            if dep is None or not dep.stop_requested:
                return False
            if not self.replaced:
                _serve(svc, v)
                svc.state = ServiceState.STOPPED.value
        routing.of(self.platform).changed()
        return True

    def replace(self, slot: int, v: Version, switch: bool) -> None:
        """Start a container of `v` for `slot`; once it answers, it takes the slot (with `switch`,
        the service's serving version becomes `v`), and the slot's old container is drained and
        removed. A container that does not answer is removed: DeployFailed."""
        platform = self.platform
        with platform.services_lock, platform.store.session() as s:
            self.hold()
            container = start_container(platform, _service(s, self.service_id), v)
            dep = s.get(ServiceDeploymentRow, self.dep_id)
            assert dep is not None
            dep.container = container  # not an orphan to the supervisor while it starts
        try:
            address = _wait_until_answering(platform, self.service_id, container, self.stop, self.hold, v)
        except (DeployFailed, _Interrupted):
            platform.engine.remove_container(container, timeout=0)
            raise
        with platform.services_lock:
            with platform.store.session() as s:
                self.hold()
                svc = s.get(ServiceRow, self.service_id)
                if svc is None:
                    platform.engine.remove_container(container, timeout=0)
                    raise DeployFailed("The service was deleted during its deployment.", "")
                row = s.get(ServiceReplicaRow, (self.service_id, slot))
                if row is None:
                    row = ServiceReplicaRow(service_id=self.service_id, slot=slot)
                    s.add(row)
                    self.added.append(slot)
                old = row.container
                row.version, row.container, row.address, row.state = v.version, container, address, "running"
                # What it printed while it came up is there as it starts serving; the rest comes
                # with the supervisor's passes.
                deployed_logs.ship(platform, s, self.service_id, container)
                row.started_at, row.next_start_at, row.quick_crashes = utcnow(), None, 0
                dep = s.get(ServiceDeploymentRow, self.dep_id)
                assert dep is not None
                if switch:
                    self.old_service = {k: getattr(svc, k) for k in _SERVING}
                    _serve(svc, v)
                    # A deploy runs the service (a stopped one too), unless it was stopped since
                    # the deploy began: that stop sticks (the supervisor removes the container).
                    svc.desired = "stopped" if dep.stop_requested else "running"
                    svc.state = (ServiceState.STOPPED if dep.stop_requested else ServiceState.RUNNING).value
                dep.container = None
            # Only once the switch is stored does the old container go: a server killed in
            # between leaves a container that no replica points at (the supervisor removes it),
            # never a replica pointing at a container that is gone. New requests go to the new
            # container from now; those in flight to the old one finish first.
            reason = f"{self.name} v{v.version} replaces it"
            gone = takedown.claim(platform, self.service_id, [old], routing.RESTARTING, reason)
            self.replaced.append(slot)
        routing.of(platform).changed()
        gone.run()  # drained and stopped without the services' lock (every workspace's)

    def retire(self, slot: int, reason: str) -> None:
        """Remove the replica of `slot` (drained first)."""
        with self.platform.services_lock:
            self.hold()
            with self.platform.store.session() as s:
                row = s.get(ServiceReplicaRow, (self.service_id, slot))
                old = row.container if row is not None else None
                if row is not None:
                    s.delete(row)
            gone = takedown.claim(self.platform, self.service_id, [old], routing.GOING_AWAY, reason)
        routing.of(self.platform).changed()
        gone.run()

    def roll_back(self, old: Version | None, slots: dict[int, int]) -> None:
        """After a failed replica: the slots already replaced get the old version again (or go,
        if they had none), and the service serves the old version as before."""
        if not self.replaced:
            return
        try:
            for slot in reversed(self.replaced):
                if old is None or slot in self.added or slot not in slots:
                    self.retire(slot, f"{self.name}'s new version was not deployed")
                else:
                    self.replace(slot, old, switch=False)
        except DeployFailed as e:  # the old version does not come back either: say so, go on
            log.warning("rolling %s back: %s", self.name, e.message)
        with self.platform.services_lock, self.platform.store.session() as s:
            svc = s.get(ServiceRow, self.service_id)
            dep = s.get(ServiceDeploymentRow, self.dep_id)
            if svc is not None and self.old_service:
                for key, value in self.old_service.items():
                    setattr(svc, key, value)
                if dep is not None and dep.stop_requested:  # a stop during the deployment sticks
                    svc.desired = "stopped"
                if old is None:
                    svc.state = ServiceState.FAILED.value
        routing.of(self.platform).changed()

    def hold(self) -> None:
        """Renew the service's lease (when due); DeployFailed if another platform has it now."""
        if not self.lease.keep():
            raise DeployFailed(
                f"{self.name} was taken over by another server during its deployment (this one "
                "did not renew the service's lease in time).",
                "Deploy again.",
            )


# What the switch changes on the service's row (and a roll back puts back).
_SERVING = ("version", "image", "command", "run_command", "manifest", "state", "error", "desired")


def _serve(svc: ServiceRow, v: Version) -> None:
    """Make `v` the service's current version: what its replicas run from now."""
    svc.version, svc.image, svc.command = v.version, v.image, json.dumps(v.command)
    svc.run_command, svc.manifest = v.run_command, v.manifest.model_dump_json()
    svc.error = None


def _wait_until_answering(
    platform: Platform,
    service_id: str,
    container: str,
    stop: threading.Event,
    hold: Callable[[], None],
    v: Version,
) -> str:
    timeout = float(platform.config.service_start_timeout)
    deadline = time.monotonic() + timeout
    address = None
    while time.monotonic() < deadline and not stop.is_set():
        hold()
        found = platform.engine.list_containers({"org.orch.service": service_id})
        info = next((c for c in found if c.name == container), None)
        if info is None or not info.running:
            code = f" with exit code {info.exit_code}" if info is not None else ""
            output = _ended(platform, service_id, container)
            if v.run_command and RUN_COMMAND_FAILED in output:  # its command never started
                why = f"The new version's run_command (orch.yaml) failed{code}, before its command started."
                fix = "Fix run_command (it runs as root at every start) and deploy again."
            else:
                why = f"The new version exited{code} before it answered on port {PORT}."
                fix = "Fix it and deploy again; the previous version (if any) still serves."
            raise DeployFailed(why + _last(output), fix)
        address = address or platform.engine.container_address(container)
        if address and platform.probe(address, PORT):
            return address
        time.sleep(0.2)
    if stop.is_set():  # the server stops: the deployment is queued again, not failed as silent
        raise _Interrupted
    output = _ended(platform, service_id, container)
    raise DeployFailed(
        f"The new version did not answer on port {PORT} within {timeout:.0f} s. A service must listen "
        f"on all interfaces (0.0.0.0, not 127.0.0.1 or localhost), on the port in $PORT ({PORT})."
        + _last(output),
        "Make it listen on 0.0.0.0:$PORT, or raise ORCH_SERVICE_START_TIMEOUT if it takes longer to start.",
    )


def _ended(platform: Platform, service_id: str, container: str) -> str:
    """A new container that did not come up: its output goes into the service's (so `orch
    service logs` shows what it printed), and it is removed; return its last lines."""
    with platform.services_lock, platform.store.session() as s:
        output = deployed_logs.archive(platform, s, service_id, container)
    platform.engine.remove_container(container, timeout=0)
    return output


def _last(output: str) -> str:
    last = deployed_logs.tail(output, 10).strip()
    return f" Its last output:\n{last}" if last else ""


def _fail(platform: Platform, dep_id: str, message: str, tail: list[str]) -> None:
    with platform.services_lock, platform.store.session() as s:
        dep = s.get(ServiceDeploymentRow, dep_id)
        if dep is None:
            return
        dep.status, dep.error, dep.finished_at = DeploymentStatus.FAILED.value, message, utcnow()
        dep.log_tail = "\n".join(tail)
        svc = s.get(ServiceRow, dep.service_id)
        if svc is not None:
            svc.error = f"v{dep.version} was not deployed: {message}"
            if svc.version == 0:
                svc.state = ServiceState.FAILED.value
        image = dep.image
    # Once the failure is stored (`_record` may ask for it again): an image left over is not
    # what the deployment is recorded for.
    if image:
        try:
            platform.engine.remove_image(image)
        except OrchError as e:
            log.warning("removing the image of failed deployment %s: %s", dep_id, e)
    platform.wake_supervisor.set()
