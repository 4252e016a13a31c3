"""Service use cases: deploy a bundle as a new version, list, show, stop, restart, delete, logs."""

from __future__ import annotations

import json
import shlex
import shutil
import time

import anyio
from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.orm import Session

from orch.bundle import BundleInfo, Manifest, inspect_bundle
from orch.errors import Conflict, InvalidInput, NotFound
from orch.models import DeploymentStatus, ServiceState, check_name, new_id
from orch.sandbox.deps import dependency_files
from orch.sandbox.service_spec import PORT as PORT  # where the proxy sends (tests point it elsewhere)
from orch.services import bundles, deployed_logs, refs, restarts, routing, service_budget, takedown
from orch.services.agents import checked_dockerfile, dockerfile_environment, dockerfile_notes, what_runs
from orch.services.platform import Platform
from orch.services.reconcile import reconcile, remove_images, replicas
from orch.services.service_rules import LOOP_REFUSED, check_command
from orch.services.views import DeploymentView, ReplicaView, ServiceLogs, ServiceView
from orch.store.db import Gone
from orch.store.schema import (
    NodeRow,
    ServiceDeploymentRow,
    ServiceLeaseRow,
    ServiceRow,
    WorkspaceRow,
    utcnow,
)


def deploy(
    platform: Platform,
    ws_id: str,
    name: str,
    data: bytes,
    command: str | None = None,
    public: bool = False,
) -> DeploymentView:
    """Store `data` as the service's next version and queue its deployment; nothing is stored
    (and nothing deployed) on refusal. `public` (or `public: true` in orch.yaml): the proxy
    answers anyone once this version serves; each deployment says it again (private otherwise)."""
    check_name(name, "Service name", id_prefix="svc_")
    check_command(command)
    info = inspect_bundle(data, loop_refused=LOOP_REFUSED)
    argv = _command(info, command)
    validation = checked_dockerfile(info.dockerfile) if info.dockerfile is not None else None
    manifest = info.manifest.model_copy(update={"public": True}) if public else info.manifest
    notes = (
        dockerfile_notes(validation, what_runs("service", info, argv, command is not None))
        if validation
        else []
    )
    if info.manifest.environment:
        runtime = "the image of their own Dockerfile" if validation else "the service runtime"
        notes.append(
            f"orch.yaml pins environment {info.manifest.environment!r}, which services ignore: "
            f"they run on {runtime}."
        )
    if info.manifest.secrets:
        named = ", ".join(info.manifest.secrets)
        notes.append(
            f"orch.yaml asks for secrets ({named}), which services are not given yet: the service's "
            "process does not have them."
        )
    with platform.store.session() as s:  # answered at once, before anything is made
        found = s.scalar(select(ServiceRow).where(ServiceRow.workspace_id == ws_id, ServiceRow.name == name))
        if found is not None:
            _refuse_busy(s, found)
            serving = _unchanged(s, found, info.sha256, argv, manifest.model_dump_json())
            if serving is not None:
                view = _deployment_view(found, serving)
                view.unchanged = True
                view.notes = [*notes, f"unchanged, still v{serving.version}: nothing was built or restarted."]
                return view
    environment_id = None
    if validation is not None and info.dockerfile is not None:
        # Built as an environment of the workspace is (the same rules and build cache): one with
        # this Dockerfile already is reused.
        environment_id, note = dockerfile_environment(platform, ws_id, name, info.dockerfile, validation)
        notes += [note] if note else []
    # Locked from storing the bundle to committing the deployment that refers to it: a
    # concurrent agent delete never removes it as unused in between.
    with bundles.lock(platform), platform.services_lock, platform.store.session() as s:
        svc = _service_row(s, ws_id, name)
        _refuse_busy(s, svc)
        runs_on = svc.desired == "running" and svc.version > 0  # until the new version serves
        beside = Manifest.model_validate_json(svc.manifest) if runs_on else None
        service_budget.check(platform, s, ws_id, svc.id, name, manifest, beside)
        bundles.keep(s, info.sha256, data)
        svc.latest_version += 1
        dep = ServiceDeploymentRow(
            id=new_id("dep"),
            service_id=svc.id,
            version=svc.latest_version,
            status=DeploymentStatus.QUEUED.value,
            bundle_sha256=info.sha256,
            command=json.dumps(argv),
            run_command=info.manifest.run_command,
            manifest=manifest.model_dump_json(),
            deps_files=json.dumps(sorted(dependency_files(info.files))),
            environment_id=environment_id,
            log_tail="",
        )
        s.add(dep)
        s.flush()
        view = _deployment_view(svc, dep)
    routing.of(platform).changed()  # a new service has a route now (deploying)
    platform.wake_deploys.set()  # stored: the deploy worker starts on it now, not at its next poll
    view.notes = notes
    return view


def _under_way(service_id: str) -> ColumnElement[bool]:
    """The service's deployments that have not ended (queued, building or starting)."""
    return and_(
        ServiceDeploymentRow.service_id == service_id,
        ServiceDeploymentRow.status.not_in([d.value for d in DeploymentStatus if d.final]),
    )


def _refuse_busy(s: Session, svc: ServiceRow) -> None:
    busy = s.scalar(select(ServiceDeploymentRow.version).where(_under_way(svc.id)))
    if busy is not None:
        raise Conflict(
            f"{svc.name} v{busy} is still being deployed.", "Wait for it to end, then deploy again."
        )


def _unchanged(
    s: Session, svc: ServiceRow, bundle_sha256: str, argv: list[str], manifest: str
) -> ServiceDeploymentRow | None:
    """The serving version's deployment, if a deploy of this bundle, command and manifest would
    make the very same service and it runs as it should (else a new version is deployed: that
    is also how a crash-looping or stopped service is deployed afresh)."""
    if svc.version == 0 or svc.desired != "running" or svc.state != ServiceState.RUNNING.value:
        return None
    dep = s.scalar(
        select(ServiceDeploymentRow).where(
            ServiceDeploymentRow.service_id == svc.id, ServiceDeploymentRow.version == svc.version
        )
    )
    same = dep is not None and (dep.bundle_sha256, dep.command, dep.manifest) == (
        bundle_sha256,
        json.dumps(argv),
        manifest,
    )
    return dep if same else None


def _command(info: BundleInfo, command: str | None) -> list[str]:
    """The command line the service runs, or InvalidInput for a bundle a service can't be."""
    if not info.manifest.network:
        raise InvalidInput(
            "orch.yaml says network: false, but a service must be reachable through the server.",
            "Remove network: false for services (they never get a public port of their own).",
        )
    if command is None:
        return list(info.entrypoint.command)  # the manifest's runtime.command, else from the entrypoint
    try:
        argv = shlex.split(command)
    except ValueError:
        raise InvalidInput(
            f"The command {command!r} has a quote that is never closed.", "Close the quote."
        ) from None
    if not argv:
        raise InvalidInput("The command is empty.", "Give a command line, e.g. 'python app.py'.")
    return argv


def _service_row(s: Session, ws_id: str, name: str) -> ServiceRow:
    """The service `name`, made now (deploying, with no version yet) if it is new."""
    svc = s.scalar(select(ServiceRow).where(ServiceRow.workspace_id == ws_id, ServiceRow.name == name))
    if svc is None:
        svc = ServiceRow(
            id=new_id("svc"),
            workspace_id=ws_id,
            name=name,
            desired="running",
            state=ServiceState.DEPLOYING.value,
            version=0,
            latest_version=0,
            command="[]",
            manifest="{}",
            restarts=0,
            last_output="",
        )
        s.add(svc)
        s.flush()
    elif svc.version == 0:
        svc.state = ServiceState.DEPLOYING.value
    return svc


def _deployment_view(svc: ServiceRow, dep: ServiceDeploymentRow) -> DeploymentView:
    return DeploymentView(
        id=dep.id,
        service=svc.name,
        version=dep.version,
        status=dep.status,
        command=json.loads(dep.command),
        run_command=dep.run_command,
        dependency_files=json.loads(dep.deps_files),
        image=dep.image,
        error=dep.error,
        log_tail=dep.log_tail,
        queued_at=dep.queued_at,
        finished_at=dep.finished_at,
        public=_public(dep.manifest),
    )


def service_path(workspace: str, name: str) -> str:
    """A service's path on the services' origin; the proxy takes what follows it as the path
    to send to the service."""
    return f"/services/{workspace}/{name}/"


def _public(manifest: str) -> bool:
    """Whether the proxy answers anyone for this (stored) manifest."""
    return bool(json.loads(manifest).get("public", False))


def _resolve(s: Session, ws_id: str, ref: str) -> ServiceRow:
    return refs.find(
        s,
        ServiceRow,
        ref,
        ServiceRow.workspace_id == ws_id,
        id_prefix="svc_",
        what="service",
        fix="See `orch service list` for the names, or deploy this one first.",
    )


def _view(s: Session, svc: ServiceRow, services_url: str) -> ServiceView:
    ws = s.get(WorkspaceRow, svc.workspace_id)
    if ws is None:  # deleted (with its services) since `svc` was read
        raise Gone()
    latest = s.scalar(
        select(ServiceDeploymentRow).where(
            ServiceDeploymentRow.service_id == svc.id, ServiceDeploymentRow.version == svc.latest_version
        )
    )
    rows = replicas(s, svc.id)
    first = rows[0] if rows else None
    running = [r.started_at for r in rows if r.state == ServiceState.RUNNING.value and r.started_at]
    uptime = (utcnow() - min(running)).total_seconds() if running else None
    return ServiceView(
        id=svc.id,
        name=svc.name,
        workspace=ws.name,
        state=svc.state,
        desired=svc.desired,
        url=f"{services_url}{service_path(ws.name, svc.name)}",
        public=_public(svc.manifest),
        version=svc.version,
        latest_version=svc.latest_version,
        image=svc.image,
        command=json.loads(svc.command),
        run_command=svc.run_command,
        container=first.container if first else None,
        replicas=[
            ReplicaView(
                slot=r.slot, version=r.version, state=r.state, container=r.container, started_at=r.started_at
            )
            for r in rows
        ],
        desired_replicas=Manifest.model_validate_json(svc.manifest).replicas if svc.version else 0,
        restarts=svc.restarts,
        started_at=first.started_at if first else None,
        uptime=uptime,
        last_exit=svc.last_exit,
        last_output=svc.last_output,
        error=svc.error,
        created_at=svc.created_at,
        deployment=_deployment_view(svc, latest) if latest else None,
        node=_node(s, svc.id),
    )


def _node(s: Session, service_id: str) -> str | None:
    """The cluster node that holds the service's lease (and so runs it), if a node does."""
    holder = select(ServiceLeaseRow.holder).where(
        ServiceLeaseRow.service_id == service_id, ServiceLeaseRow.expires_at > utcnow()
    )
    return s.scalar(select(NodeRow.id).where(NodeRow.instance.in_(holder)))


def list_services(platform: Platform, ws_id: str) -> list[ServiceView]:
    with platform.store.session() as s:
        rows = s.scalars(select(ServiceRow).where(ServiceRow.workspace_id == ws_id).order_by(ServiceRow.name))
        return [_view(s, r, platform.services_url) for r in rows]


def show(platform: Platform, ws_id: str, ref: str) -> ServiceView:
    with platform.store.session() as s:
        return _view(s, _resolve(s, ws_id, ref), platform.services_url)


SEE_STATUS_AND_LOGS = "See the service's status and its logs."


def deployment(platform: Platform, ws_id: str, ref: str, version: int) -> DeploymentView:
    with platform.store.session() as s:
        svc = _resolve(s, ws_id, ref)
        query = select(ServiceDeploymentRow).where(
            ServiceDeploymentRow.service_id == svc.id, ServiceDeploymentRow.version == version
        )
        # Outside the column's range there is no such version (and the stores refuse to compare).
        dep = s.scalar(query) if 1 <= version < 2**31 else None
        if dep is None:
            raise NotFound(
                f"{svc.name} has no version {version}.", "The service's status shows its latest version."
            )
        return _deployment_view(svc, dep)


def stop(platform: Platform, ws_id: str, ref: str) -> ServiceView:
    """Stop the service's containers; it stays stopped (also across server restarts, and when a
    deployment under way ends: it makes its version current and leaves the service stopped).
    Its route has no replica from the commit on; the containers are drained and stopped
    without the services' lock (services/takedown.py)."""
    with platform.services_lock, platform.store.session() as s:
        svc = _resolve(s, ws_id, ref)
        svc.desired = "stopped"
        s.execute(update(ServiceDeploymentRow).where(_under_way(svc.id)).values(stop_requested=True))
        containers = [r.container or "" for r in replicas(s, svc.id)]
        service_id = svc.id
    routing.of(platform).changed()
    reconcile(platform)  # the holder (this platform, on one machine) takes its containers down
    # Also when the supervisor's pass took them down first (in a thread of its own).
    takedown.in_hand(platform).wait(service_id, routing.DRAIN_SECONDS + takedown.STOP_SECONDS + 30)
    # What this server proxies to containers another platform runs (a cluster's node) ends too.
    routing.of(platform).drain(containers, routing.GOING_AWAY, routing.STOPPED)
    return show(platform, ws_id, ref)


def restart(platform: Platform, ws_id: str, ref: str) -> ServiceView:
    """Start the service afresh (a stopped one too): a new container for each replica, one
    replica at a time (services/restarts.py), the backoff forgotten. A deployment under way goes
    on, and ends with the service running (a stop before is undone)."""
    with platform.services_lock, platform.store.session() as s:
        svc = _resolve(s, ws_id, ref)
        deploying = s.scalar(select(ServiceDeploymentRow.id).where(_under_way(svc.id))) is not None
        if svc.version == 0 and not deploying:
            raise Conflict(
                f"{svc.name} has no deployed version to restart.",
                "Deploy a version of it first.",
            )
        if svc.desired == "stopped":  # it held nothing: what it runs again must fit
            # With a deployment under way, both run until it ends: the serving version's replicas
            # start again at once, the new version's as it rolls out.
            new = s.scalar(select(ServiceDeploymentRow.manifest).where(_under_way(svc.id)))
            versions = [
                Manifest.model_validate_json(m) for m in (svc.manifest if svc.version else None, new) if m
            ]
            beside = versions[1] if len(versions) > 1 else None
            service_budget.check(platform, s, ws_id, svc.id, svc.name, versions[0], beside, restart=True)
        s.execute(update(ServiceDeploymentRow).where(_under_way(svc.id)).values(stop_requested=False))
        starts = svc.desired == "stopped" or not replicas(s, svc.id)
        if starts:
            svc.state = (ServiceState.STARTING if svc.version else ServiceState.DEPLOYING).value
        svc.desired = "running"
        service_id = svc.id
    routing.of(platform).changed()
    restarts.restart(platform, service_id)
    reconcile(platform)
    if starts and not deploying:  # a deployment under way starts it at its own end
        restarts.serving(platform, service_id)
    return show(platform, ws_id, ref)


def delete_service(platform: Platform, ws_id: str, ref: str) -> str:
    """Remove the service: its containers, images, deployments and logs."""
    with platform.services_lock:
        with platform.store.session() as s:
            svc = _resolve(s, ws_id, ref)
            service_id, name = svc.id, svc.name
            busy = s.scalar(
                select(ServiceDeploymentRow.version).where(
                    ServiceDeploymentRow.service_id == svc.id,
                    ServiceDeploymentRow.status.in_(
                        [DeploymentStatus.BUILDING.value, DeploymentStatus.STARTING.value]
                    ),
                )
            )
            if busy is not None:
                raise Conflict(
                    f"{svc.name} v{busy} is being deployed.", "Wait for it to end, then delete again."
                )
            containers = [r.container for r in replicas(s, svc.id)]
            s.execute(delete(ServiceDeploymentRow).where(ServiceDeploymentRow.service_id == service_id))
            s.delete(svc)
        # Drained and removed at once (no SIGTERM grace), without the services' lock.
        gone = takedown.claim(
            platform, service_id, containers, routing.GOING_AWAY, routing.DELETED, stop_seconds=0
        )
    routing.of(platform).changed()
    gone.run()
    remove_leftovers(platform, service_id)
    return name


def remove_leftovers(platform: Platform, service_id: str) -> None:
    """After a deleted service's rows are gone: its containers, images and log files on this
    machine. Raise EngineError."""
    if platform.runs_work:  # on a cluster, the node that ran it removes them as orphans
        platform.engine.remove_containers(platform.service_labels(service_id))
        remove_images(platform, service_id)
        shutil.rmtree(deployed_logs.directory(platform, service_id), ignore_errors=True)


# How often a waiting follower looks at the service's output again: containers write their
# logs themselves (Podman's k8s-file), so nothing in the server can wake a follower sooner.
FOLLOW_POLL = 0.25


async def follow_logs(
    platform: Platform, ws_id: str, ref: str, offset: int = 0, wait: float = 0
) -> ServiceLogs:
    """Output from byte `offset` (all of the service's containers, oldest first); with `wait`,
    wait until there is some (at most `wait` seconds). The reads run in the thread pool, but the
    wait holds no thread, so any number of followers (the UI's service page, `orch service logs
    -f`) leave the pool to the rest of the API."""
    deadline = time.monotonic() + max(0.0, min(wait, 30.0))
    while True:
        logs = await anyio.to_thread.run_sync(_logs, platform, ws_id, ref, offset)
        if logs.text or platform.stopping.is_set() or (left := deadline - time.monotonic()) <= 0:
            return logs
        await anyio.sleep(min(left, FOLLOW_POLL))


def _logs(platform: Platform, ws_id: str, ref: str, offset: int) -> ServiceLogs:
    with platform.store.session() as s:
        svc = _resolve(s, ws_id, ref)
        text, new_offset = deployed_logs.read(s, svc.id, offset)
        return ServiceLogs(text=text, offset=new_offset, state=svc.state)
