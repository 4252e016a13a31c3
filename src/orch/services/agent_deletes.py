"""Deleting an agent, or one of its versions. Refused while a run of what would go has not ended;
its past runs (and their output) go with it, and its bundle files once nothing refers to them.
Environments it brought or pinned stay: `orch env delete` no longer counts it as a user."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from orch.errors import Conflict, NotFound, RunFailed
from orch.models import EnvKind, EnvStatus, RunStatus
from orch.services import agents, bundles, usage
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.services.run_environment import choose_environment
from orch.store.schema import AgentRow, AgentVersionRow, EnvironmentRow, RunRow, WorkspaceRow

_UNFINISHED = [s.value for s in RunStatus if not s.final]


class AgentDeleted(BaseModel):
    """What a delete removed, and what it left for the user to decide about."""

    agent: str
    id: str
    deleted_versions: list[int]
    deleted_runs: int
    # The agent's latest version now (the one its next run runs); None: the agent is gone.
    latest_version: int | None
    # Environments a publish made for the deleted versions' Dockerfiles that no agent uses any
    # longer: `orch env delete` can remove them now.
    unused_environments: list[str]
    # Warnings, as a publish gives them: the version that is the latest now would fail to run
    # because of its environment (gone, or its last build failed).
    notes: list[str] = []


@dataclass
class _Removed:
    versions: list[int]
    run_ids: list[str]
    shas: set[str]  # the removed versions' bundles
    dockerfile_envs: set[str]  # the environments built from their Dockerfiles

    def answer(self, s: Session, ws_id: str, agent: AgentRow, latest: int | None) -> AgentDeleted:
        """Once the agent's latest version is `latest` (None: the agent is gone): which of those
        environments no agent uses now is asked of what is left, the latest version included."""
        return AgentDeleted(
            agent=agent.name,
            id=agent.id,
            deleted_versions=self.versions,
            deleted_runs=len(self.run_ids),
            latest_version=latest,
            unused_environments=_unused(s, ws_id, self.dockerfile_envs),
        )


def delete_agent(platform: Platform, ws_id: str, ref: str) -> AgentDeleted:
    """Delete the agent, every version of it and its past runs."""
    with platform.store.session() as s:
        agent = agents.resolve_agent(s, ws_id, ref, lock=True)
        versions = list(s.scalars(select(AgentVersionRow).where(AgentVersionRow.agent_id == agent.id)))
        gone = _remove(s, ws_id, versions, RunRow.agent_id == agent.id, agent.name)
        result = gone.answer(s, ws_id, agent, None)
        s.execute(delete(AgentRow).where(AgentRow.id == agent.id))
    _clean_up(platform, gone)
    return result


def delete_version(platform: Platform, ws_id: str, ref: str, number: int) -> AgentDeleted:
    """Delete one version and its past runs. The agent's only version can't be deleted (that is
    deleting the agent); deleting the latest makes the newest remaining one the latest. Version
    numbers are never given again."""
    with platform.store.session() as s:
        agent = agents.resolve_agent(s, ws_id, ref, lock=True)
        # Outside the column's range there is no such version (and the stores refuse to compare).
        version = (
            s.scalar(
                select(AgentVersionRow).where(
                    AgentVersionRow.agent_id == agent.id, AgentVersionRow.version == number
                )
            )
            if 1 <= number < 2**31
            else None
        )
        if version is None:
            raise NotFound(
                f"{agent.name} has no version {number}.",
                "See the agent's versions for the numbers that exist.",
            )
        count = s.scalar(
            select(func.count()).select_from(AgentVersionRow).where(AgentVersionRow.agent_id == agent.id)
        )
        if count == 1:
            raise Conflict(
                f"v{number} is the only version of {agent.name}, and an agent can't be left without one.",
                "Delete the agent itself instead.",
            )
        runs_of = RunRow.agent_version_id == version.id
        gone = _remove(s, ws_id, [version], runs_of, f"{agent.name} v{number}")
        agent.latest_version = int(
            s.scalar(select(func.max(AgentVersionRow.version)).where(AgentVersionRow.agent_id == agent.id))
            or 0
        )
        s.flush()
        result = gone.answer(s, ws_id, agent, agent.latest_version)
        if number > agent.latest_version:  # a rollback: say whether what runs now can run
            result.notes = _environment_notes(platform, s, ws_id, agent)
    _clean_up(platform, gone)
    return result


def _environment_notes(platform: Platform, s: Session, ws_id: str, agent: AgentRow) -> list[str]:
    """Why a run of the agent's latest version would fail because of its environment, if it
    would: the environment it chooses is gone, or its last build failed."""
    latest = f"v{agent.latest_version}, the latest version now"
    ws = s.get(WorkspaceRow, ws_id)
    assert ws is not None
    try:
        chosen = choose_environment(s, ws, agents.latest_version(s, agent))
    except RunFailed as e:
        return [f"Runs of {latest}, will fail: {e.message} {e.fix}"]
    state = envs.view(platform, s, ws, chosen.environment)
    if state.status != EnvStatus.FAILED or chosen.environment.image:  # with one, runs run it
        return []
    error = (state.error or "no error was recorded").strip().rstrip(".")
    return [
        f"{latest}, runs in environment {state.name}, whose last build failed ({error}); its runs "
        "will fail until it is built. See its build log, then rebuild it or pin another environment."
    ]


def _remove(
    s: Session, ws_id: str, versions: list[AgentVersionRow], runs_of: ColumnElement[bool], what: str
) -> _Removed:
    """Delete `versions` and the runs `runs_of` selects, or refuse if one of those runs has not
    ended (the session then rolls back)."""
    ids = [v.id for v in versions]
    numbers = sorted(v.version for v in versions)
    shas = {v.bundle_sha256 for v in versions}
    dockerfile_envs = {v.dockerfile_environment_id for v in versions if v.dockerfile_environment_id}
    # First the versions: on PostgreSQL this waits for a run being created from one of them
    # (runs.create key-share locks its version), so the check below sees that run.
    s.execute(delete(AgentVersionRow).where(AgentVersionRow.id.in_(ids)))
    runs = select(RunRow.id).where(RunRow.workspace_id == ws_id, runs_of)
    unfinished = list(s.scalars(runs.where(RunRow.status.in_(_UNFINISHED)).order_by(RunRow.queued_at)))
    if unfinished:
        n = len(unfinished)
        listed = ", ".join(unfinished[:3]) + (", …" if n > 3 else "")
        them = "it" if n == 1 else "them"
        raise Conflict(
            f"{what} has {n} run{'s' if n != 1 else ''} that {'has' if n == 1 else 'have'} not "
            f"ended ({listed}).",
            f"Wait for {them} to end, or cancel {them}, then delete again.",
            unfinished_runs=unfinished,
        )
    run_ids = list(s.scalars(runs))
    s.execute(delete(RunRow).where(RunRow.id.in_(run_ids)))
    s.flush()
    return _Removed(numbers, run_ids, shas, dockerfile_envs)


def _unused(s: Session, ws_id: str, env_ids: set[str]) -> list[str]:
    """Of the environments `env_ids`, the ones a publish made for a Dockerfile that no agent uses
    now. One the workspace made (`orch env create`) is its own, even when a publish reused it
    for the same Dockerfile: not named, as a pinned one is not."""
    rows = list(s.scalars(select(EnvironmentRow).where(EnvironmentRow.id.in_(env_ids))))
    return sorted(
        e.name
        for e in rows
        if e.kind == EnvKind.CUSTOM and e.made_for is not None and not usage.users(s, ws_id, e)
    )


def _clean_up(platform: Platform, gone: _Removed) -> None:
    """After the commit: bundles nothing refers to now (the deleted runs' output went with
    their rows)."""
    bundles.remove_unused(platform, gone.shas)
