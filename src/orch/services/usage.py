"""Who uses an environment: the check that `environments.delete` runs before it deletes one.

Every check is listed here, in CHECKS, so the answer never depends on which modules happened to
be imported first; a later noun that can use an environment adds its check to that list."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch.models import SHARED
from orch.services.platform import Platform
from orch.store.db import Gone
from orch.store.schema import AgentRow, AgentVersionRow, EnvironmentRow, WorkspaceRow

# A check returns a plain description of each user of `env` in the workspace, e.g. "crawler".
UsageCheck = Callable[[Session, str, EnvironmentRow], list[str]]


def agents_using(s: Session, ws_id: str, env: EnvironmentRow) -> list[str]:
    """Agents whose latest version uses `env` by Dockerfile or by pin."""
    rows = s.execute(
        select(AgentRow.name, AgentVersionRow.dockerfile_environment_id, AgentVersionRow.pinned_environment)
        .join(AgentVersionRow, AgentVersionRow.agent_id == AgentRow.id)
        .where(AgentRow.workspace_id == ws_id, AgentVersionRow.version == AgentRow.latest_version)
    )
    return sorted(
        name
        for name, by_docker, pin in rows
        if by_docker == env.id or (pin is not None and pin in (env.name, env.id))
    )


CHECKS: tuple[UsageCheck, ...] = (agents_using,)


def users(session: Session, workspace_id: str, env: EnvironmentRow) -> list[str]:
    """Every user of `env` in the workspace, as the checks describe them."""
    return [u for check in CHECKS for u in check(session, workspace_id, env)]


def users_by_environment(platform: Platform, ws_id: str) -> dict[str, list[str]]:
    """Who uses each environment the workspace sees, by environment id, as a person reads it:
    "the workspace default" first, then "agent NAME" for each agent."""
    with platform.store.session() as s:
        ws = s.get(WorkspaceRow, ws_id)
        if ws is None:  # deleted since this request's token check (services/workspace_deletes.py)
            raise Gone()
        result = {}
        for env in s.scalars(select(EnvironmentRow).where(EnvironmentRow.scope.in_([ws_id, SHARED]))):
            described = [f"agent {u}" for u in users(s, ws_id, env)]
            if ws.default_environment_id == env.id:
                described.insert(0, "the workspace default")
            result[env.id] = described
        return result
