"""Which environment a run gets, chosen at run time (docs/agents.md, "Which environment a run
gets"): the agent's Dockerfile, its pin, the workspace default, the base for its language."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from orch.errors import NotFound, RunFailed
from orch.models import EnvironmentRule
from orch.services import agents
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store.db import Gone
from orch.store.schema import AgentRow, AgentVersionRow, EnvironmentRow, WorkspaceRow

# The shared base environment of a language: what most runs get, looked up at each (built once).
_BASE = select(EnvironmentRow).where(
    EnvironmentRow.scope == envs.SHARED, EnvironmentRow.name == bindparam("base")
)


@dataclass(frozen=True)
class Chosen:
    environment: EnvironmentRow
    rule: EnvironmentRule


def choose_environment(s: Session, ws: WorkspaceRow, version: AgentVersionRow) -> Chosen:
    """The environment `version` runs in now, and the rule that chose it."""
    if version.dockerfile_environment_id:
        env = s.get(EnvironmentRow, version.dockerfile_environment_id)
        if env is None:
            raise RunFailed(
                "The environment built from this agent's Dockerfile no longer exists.",
                "Publish the agent again with its Dockerfile.",
            )
        return Chosen(env, EnvironmentRule.DOCKERFILE)
    if version.pinned_environment:
        try:
            return Chosen(envs.resolve(s, ws, version.pinned_environment), EnvironmentRule.PINNED)
        except NotFound:
            raise RunFailed(
                f"The pinned environment {version.pinned_environment!r} no longer exists.",
                "Create it again, or pin another environment in orch.yaml and publish again.",
            ) from None
    if ws.default_environment_id:
        env = s.get(EnvironmentRow, ws.default_environment_id)
        if env is not None:
            return Chosen(env, EnvironmentRule.WORKSPACE_DEFAULT)
    base = "python" if version.language == "python" else "node"
    found = s.scalar(_BASE, {"base": base})
    assert found is not None, f"the base environment {base} is seeded at start"
    return Chosen(found, EnvironmentRule.BASE)


def would_run(platform: Platform, ws_id: str, agent_id: str) -> dict[str, str | None]:
    """What the agent's latest version would run in now: {name, rule, error} (error: why none)."""
    with platform.store.session() as s:
        agent = s.get(AgentRow, agent_id)
        ws = s.get(WorkspaceRow, ws_id)
        if agent is None or ws is None:  # deleted since the request found them
            raise Gone()
        try:
            chosen = choose_environment(s, ws, agents.latest_version(s, agent))
        except RunFailed as e:
            return {"name": None, "rule": None, "error": e.message}
        return {"name": chosen.environment.name, "rule": chosen.rule.value, "error": None}
