"""Deploying a version of a service: build its image (the bundle plus its dependencies, once),
start it next to the version that serves, wait until it answers on PORT, then switch and stop the
old one. A version that does not come up is removed and the old one keeps serving."""

from __future__ import annotations

import json
import logging
import threading
import time

from sqlalchemy import update

from orch import metrics
from orch.builder import base_images
from orch.builder.host import ca_mounts, proxy_env
from orch.bundle import Manifest
from orch.engine.base import BuildRequest
from orch.errors import DeployFailed, OrchError
from orch.models import DeploymentStatus, ServiceState
from orch.sandbox.service_spec import PORT, containerfile
from orch.services import deployed_logs, images
from orch.services.agents import extracted_bundle
from orch.services.platform import Platform
from orch.services.reconcile import start_container
from orch.store import queue
from orch.store.queue import left_by
from orch.store.schema import ServiceDeploymentRow, ServiceRow, utcnow

log = logging.getLogger(__name__)


def claim(platform: Platform) -> str | None:
    """Move the oldest queued deployment to "building" and return its id (None: queue empty)."""
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


def execute(platform: Platform, dep_id: str, stop: threading.Event | None = None) -> None:
    """Take a claimed deployment to its end; every outcome is recorded, none raises."""
    tail: list[str] = []
    try:
        _execute(platform, dep_id, tail, stop or threading.Event())
    except OrchError as e:
        _fail(platform, dep_id, e.message, tail)
    except Exception as e:  # a bug must fail the deployment, not the worker
        log.exception("deployment %s crashed", dep_id)
        _fail(platform, dep_id, f"internal error: {type(e).__name__}", tail)
    else:
        metrics.of(platform).deployment_finished("ready")


def _execute(platform: Platform, dep_id: str, tail: list[str], stop: threading.Event) -> None:
    with platform.store.session() as s:
        dep = s.get(ServiceDeploymentRow, dep_id)
        assert dep is not None
        svc = s.get(ServiceRow, dep.service_id)
        assert svc is not None
        name, version, bundle_sha = svc.name, dep.version, dep.bundle_sha256
        deps_files = json.loads(dep.deps_files)
        command, run_command = json.loads(dep.command), dep.run_command
        manifest = Manifest.model_validate_json(dep.manifest)

    def out(line: str) -> None:
        tail.append(line)
        del tail[:-40]

    base_images.ensure(platform.engine, platform.config, out, ["service-runner"])
    tag = images.service_tag(platform, name, version)
    request = BuildRequest(
        containerfile=containerfile(base_images.image_tag("service-runner"), deps_files),
        tag=tag,
        labels={**platform.service_labels(dep.service_id), "org.orch.version": str(version)},
        mounts=ca_mounts(platform.config),
        build_args=proxy_env(platform.config),
        timeout=float(platform.config.build_timeout),
        context=extracted_bundle(platform, bundle_sha),
        owner=platform.instance,
    )
    started = time.monotonic()
    try:
        platform.engine.build(request, out)
    except OrchError as e:
        metrics.of(platform).build_finished("failed", time.monotonic() - started, kind="service")
        raise DeployFailed(f"Building v{version} failed: {e.message}", "See the deployment's log.") from None
    metrics.of(platform).build_finished("ready", time.monotonic() - started, kind="service")
    with platform.services_lock, platform.store.session() as s:
        svc = s.get(ServiceRow, dep.service_id)
        if svc is None:
            raise DeployFailed("The service was deleted during its deployment.", "")
        container = start_container(platform, svc, tag, command, run_command, manifest, version)
        s.execute(
            update(ServiceDeploymentRow)
            .where(ServiceDeploymentRow.id == dep_id)
            .values(status=DeploymentStatus.STARTING.value, image=tag, container=container)
        )
    address = _wait_until_answering(platform, dep.service_id, container, stop)
    with platform.services_lock:
        with platform.store.session() as s:
            svc = s.get(ServiceRow, dep.service_id)
            if svc is None:
                platform.engine.remove_container(container, timeout=0)
                raise DeployFailed("The service was deleted during its deployment.", "")
            old, old_image = svc.container, svc.image
            svc.version, svc.image, svc.command = version, tag, json.dumps(command)
            svc.run_command, svc.manifest = run_command, manifest.model_dump_json()
            svc.container, svc.address, svc.started_at = container, address, utcnow()
            svc.state, svc.error, svc.quick_crashes = ServiceState.RUNNING.value, None, 0
            svc.next_start_at, svc.desired = None, "running"
            dep_row = s.get(ServiceDeploymentRow, dep_id)
            assert dep_row is not None
            dep_row.status, dep_row.finished_at = DeploymentStatus.READY.value, utcnow()
            dep_row.log_tail = "\n".join(tail)
        # Only once the switch is stored does the old version go: a server killed in between
        # leaves a container that no service points at (the supervisor removes it), never a
        # service pointing at a container (or an image) that is gone.
        try:
            if old and old != container:
                deployed_logs.archive(platform, dep.service_id, old)
                platform.engine.remove_container(old)
            if old_image and old_image != tag:
                platform.engine.remove_image(old_image)
        except OrchError as e:  # v{version} serves already: not a failed deployment
            log.warning("removing the previous version of %s: %s", name, e)
    platform.wake_supervisor.set()


def _wait_until_answering(platform: Platform, service_id: str, container: str, stop: threading.Event) -> str:
    timeout = float(platform.config.service_start_timeout)
    deadline = time.monotonic() + timeout
    address = None
    while time.monotonic() < deadline and not stop.is_set():
        found = platform.engine.list_containers({"org.orch.service": service_id})
        info = next((c for c in found if c.name == container), None)
        if info is None or not info.running:
            output = deployed_logs.read_container(platform, service_id, container)
            code = f" with exit code {info.exit_code}" if info is not None else ""
            platform.engine.remove_container(container, timeout=0)
            last = deployed_logs.tail(output, 10).strip()
            raise DeployFailed(
                f"The new version exited{code} before it answered on port {PORT}."
                + (f" Its last output:\n{last}" if last else ""),
                "Fix it and deploy again; the previous version (if any) still serves.",
            )
        address = address or platform.engine.container_address(container)
        if address and platform.probe(address, PORT):
            return address
        time.sleep(0.2)
    output = deployed_logs.read_container(platform, service_id, container)
    platform.engine.remove_container(container, timeout=0)
    last = deployed_logs.tail(output, 10).strip()
    raise DeployFailed(
        f"The new version did not answer on port {PORT} within {timeout:.0f} s."
        + (f" Its last output:\n{last}" if last else ""),
        "Make it listen on $PORT (0.0.0.0), or raise ORCH_SERVICE_START_TIMEOUT.",
    )


def _fail(platform: Platform, dep_id: str, message: str, tail: list[str]) -> None:
    metrics.of(platform).deployment_finished("failed")
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
        if dep.image:
            platform.engine.remove_image(dep.image)
    platform.wake_supervisor.set()
