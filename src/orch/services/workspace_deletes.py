"""Deleting a workspace (a tenant) with everything of it (docs/workspaces.md, "Deleting a
workspace"). Admin tokens only; refused for the caller's own workspace, for the one that holds
the platform's last admin tokens, and while anything of it is live (a run, a sandbox, a service,
a build). Otherwise one transaction removes its rows (most through the store's cascades from
the workspace's row; its custom environments and their builds as `orch env delete` removes
them); then what lies outside the store goes: bundles nobody refers to, environment and
service images nothing names, services' log files, and its cache mounts' directories."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from pydantic import BaseModel
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from orch.builder import cache_dirs
from orch.dockerfile import cache_mounts
from orch.errors import Conflict, OrchError
from orch.models import BuildStatus, DeploymentStatus, EnvKind, RunStatus, SandboxStatus, ServiceState
from orch.services import bundles, deployed, images, routing
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.services.workspaces import Caller, hold_admins, require_admin, target_workspace
from orch.store.db import hold
from orch.store.schema import (
    AgentRow,
    AgentVersionRow,
    Base,
    BuildRow,
    EnvironmentRow,
    RunRow,
    SandboxRow,
    SecretRow,
    ServiceDeploymentRow,
    ServiceRow,
    TokenRow,
    WorkspaceRow,
)

log = logging.getLogger(__name__)

_LISTED = 3  # ids or names a refusal quotes of each kind


class WorkspaceDeleted(BaseModel):
    """What a workspace's delete removed."""

    workspace: str
    id: str
    deleted_tokens: int
    deleted_secrets: int
    deleted_agents: int
    deleted_versions: int
    deleted_runs: int
    deleted_sandboxes: int  # records of ended sandboxes
    deleted_services: int
    deleted_environments: list[str]  # its custom environments' names (their images went too)
    deleted_cache_mounts: int  # its cache mounts' directories on this machine


def delete_workspace(platform: Platform, caller: Caller, ref: str) -> WorkspaceDeleted:
    """Delete the workspace `ref` (a name or an id) and everything of it, or refuse and change
    nothing."""
    require_admin(caller, "delete workspaces")  # first: a plain token learns nothing of `ref`
    # The services' lock, as `orch service delete` takes it: no supervisor pass acts on a
    # service of the workspace while its rows go.
    with platform.services_lock, platform.store.session() as s:
        ws = target_workspace(s, caller, ref, "delete workspaces")
        if ws.id == caller.workspace_id:
            raise Conflict(
                f"Workspace {ws.name} is the workspace of the token making this call: deleting it "
                "would sign that token out.",
                "Delete it with an admin token of another workspace.",
            )
        # Every write that refers to the workspace (a run, a sandbox, a token...) either committed
        # before this, and is seen below, or waits for this transaction and then finds it gone.
        hold(s, WorkspaceRow, ws.id)
        hold_admins(s)  # an admin token revoked meanwhile is seen below (and this waits for it)
        _refuse_last_admins(s, ws)
        _refuse_live(s, ws)
        result, shas, env_images, service_ids = _remove(s, ws)
    _clean_up(platform, ws.id, shas, env_images, service_ids, result)
    return result


def _refuse_last_admins(s: Session, ws: WorkspaceRow) -> None:
    others = select(TokenRow.id).where(TokenRow.admin.is_(True), TokenRow.workspace_id != ws.id)
    if s.scalar(others.limit(1)) is None:
        raise Conflict(
            f"Workspace {ws.name} holds the platform's last admin tokens; without them no one could "
            "manage workspaces.",
            "Create an admin token in another workspace first (`orch token create --admin "
            "--workspace NAME`), then delete again.",
        )


def _refuse_live(s: Session, ws: WorkspaceRow) -> None:
    """Refuse while a run of the workspace has not ended, a sandbox of it is open, a service of
    it is not stopped (or a deployment of it is under way), or a build of its environments has
    not ended: each named, with the command that ends it."""
    unfinished_runs = _ids(
        s, RunRow.id, RunRow.workspace_id == ws.id, RunRow.status.in_(_not_final(RunStatus))
    )
    open_sandboxes = _ids(
        s, SandboxRow.id, SandboxRow.workspace_id == ws.id, SandboxRow.status.in_(_not_final(SandboxStatus))
    )
    deploying = select(ServiceDeploymentRow.service_id).where(
        ServiceDeploymentRow.status.in_(_not_final(DeploymentStatus))
    )
    live_services = _ids(
        s,
        ServiceRow.name,
        ServiceRow.workspace_id == ws.id,
        ServiceRow.state.not_in([ServiceState.STOPPED.value, ServiceState.FAILED.value])
        | ServiceRow.id.in_(deploying),
    )
    building = _ids(
        s,
        EnvironmentRow.name,
        EnvironmentRow.scope == ws.id,
        EnvironmentRow.id.in_(
            select(BuildRow.environment_id).where(BuildRow.status.in_(_not_final(BuildStatus)))
        ),
    )
    kinds = [
        (unfinished_runs, "unfinished run", "unfinished runs", "cancel runs with `orch runs cancel RUN`"),
        (open_sandboxes, "open sandbox", "open sandboxes", "remove sandboxes with `orch sandbox rm ID`"),
        (
            live_services,
            "service not stopped",
            "services not stopped",
            "stop services with `orch service stop NAME`",
        ),
        (building, "environment being built", "environments being built", "wait for builds to end"),
    ]
    present = [k for k in kinds if k[0]]
    if not present:
        return
    parts = [
        f"{len(found)} {one if len(found) == 1 else many} ({_some(found)})" for found, one, many, _ in present
    ]
    what = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    how = ", ".join(end for *_, end in present)
    raise Conflict(
        f"Workspace {ws.name} still has {what}.",
        f"With a token of {ws.name} (`orch token create --workspace {ws.name}`), {how}; then delete again.",
        unfinished_runs=unfinished_runs,
        open_sandboxes=open_sandboxes,
        live_services=live_services,
        building_environments=building,
    )


def _remove(s: Session, ws: WorkspaceRow) -> tuple[WorkspaceDeleted, set[str], list[str], list[str]]:
    """Delete the workspace's rows; return the answer, and what goes after the commit: the
    bundles its versions and deployments ran, its environments' images, its services' ids."""
    agent_ids = select(AgentRow.id).where(AgentRow.workspace_id == ws.id)
    service_ids = list(s.scalars(select(ServiceRow.id).where(ServiceRow.workspace_id == ws.id)))
    shas = set(
        s.scalars(select(AgentVersionRow.bundle_sha256).where(AgentVersionRow.agent_id.in_(agent_ids)))
    )
    shas |= set(
        s.scalars(
            select(ServiceDeploymentRow.bundle_sha256).where(ServiceDeploymentRow.service_id.in_(service_ids))
        )
    )
    custom = list(
        s.scalars(
            select(EnvironmentRow)
            .where(EnvironmentRow.scope == ws.id, EnvironmentRow.kind == EnvKind.CUSTOM.value)
            .order_by(EnvironmentRow.name)
        )
    )
    result = WorkspaceDeleted(
        workspace=ws.name,
        id=ws.id,
        deleted_tokens=_rows(s, TokenRow, TokenRow.workspace_id == ws.id),
        deleted_secrets=_rows(s, SecretRow, SecretRow.workspace_id == ws.id),
        deleted_agents=_rows(s, AgentRow, AgentRow.workspace_id == ws.id),
        deleted_versions=_rows(s, AgentVersionRow, AgentVersionRow.agent_id.in_(agent_ids)),
        deleted_runs=_rows(s, RunRow, RunRow.workspace_id == ws.id),
        deleted_sandboxes=_rows(s, SandboxRow, SandboxRow.workspace_id == ws.id),
        deleted_services=len(service_ids),
        deleted_environments=[e.name for e in custom],
        deleted_cache_mounts=0,
    )
    env_images = [image for image in (envs.remove(s, e) for e in custom) if image]
    # The rest goes with the workspace's row: the store's foreign keys cascade from it (tokens,
    # secrets, agents and their versions, runs with their output and events, sandboxes'
    # records, services with their replicas, deployments, logs and leases).
    s.execute(delete(WorkspaceRow).where(WorkspaceRow.id == ws.id))
    return result, shas, env_images, service_ids


def _clean_up(
    platform: Platform,
    ws_id: str,
    shas: set[str],
    env_images: list[str],
    service_ids: list[str],
    result: WorkspaceDeleted,
) -> None:
    """After the commit, what is outside the store. A failure here is logged, not answered: the
    workspace is gone, and what is left goes at the server's next start (images nothing names)
    or by the cache mounts' size (their directories)."""
    bundles.remove_unused(platform, shas)
    if service_ids:
        routing.of(platform).changed()
    steps: list[tuple[Callable[[Platform, str], None], str]] = [(images.release, i) for i in env_images]
    steps += [(deployed.remove_leftovers, service_id) for service_id in service_ids]
    for step, what in steps:
        try:
            step(platform, what)
        except OrchError as e:
            log.warning("removing %s of deleted workspace %s: %s", what, ws_id, e)
    if platform.runs_work:  # a cluster's nodes keep theirs until their size evicts them
        owner = cache_mounts.owner(platform.instance, ws_id)
        try:
            gone = cache_dirs.evict(platform.config.home, platform.instance, 0, owner=owner)
        except OSError as e:
            log.warning("removing the cache mounts of deleted workspace %s: %s", ws_id, e)
        else:
            result.deleted_cache_mounts = len(gone)


def _not_final(statuses: Iterable[RunStatus | SandboxStatus | DeploymentStatus | BuildStatus]) -> list[str]:
    return [st.value for st in statuses if not st.final]


def _ids(s: Session, column: InstrumentedAttribute[str], *where: ColumnElement[bool]) -> list[str]:
    return list(s.scalars(select(column).where(*where).order_by(column)))


def _rows(s: Session, model: type[Base], where: ColumnElement[bool]) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(where)) or 0)


def _some(found: list[str]) -> str:
    return ", ".join(found[:_LISTED]) + (", …" if len(found) > _LISTED else "")
