"""Agent use cases: publish a bundle as a new immutable version, list and show agents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orch import dockerfile
from orch.builder.cache import dockerfile_hash
from orch.bundle import BundleInfo, extract_bundle, inspect_bundle
from orch.errors import InvalidDockerfile, InvalidInput, NotFound
from orch.models import BuildStatus, check_name, new_id
from orch.sandbox.deps import dependency_files
from orch.services import environments as envs
from orch.services import usage
from orch.services.platform import Platform
from orch.services.views import AgentVersionView, AgentView, PublishedView
from orch.store.schema import AgentRow, AgentVersionRow, BuildRow, EnvironmentRow, WorkspaceRow

DOCKERFILE_NOT_USED = (
    "The bundle has a Dockerfile, which was not used: publish with --docker to build the agent's "
    "own environment from it."
)


def bundle_path(platform: Platform, sha256: str) -> Path:
    return platform.config.home / "bundles" / f"{sha256}.tar.gz"


def extracted_bundle(platform: Platform, sha256: str) -> Path:
    """The bundle's files on disk (extracted once, then shared read-only by its runs)."""
    target = platform.config.home / "bundles" / sha256
    if not target.exists():
        tmp = target.with_name(f"{sha256}.tmp-{new_id('x')}")
        extract_bundle(bundle_path(platform, sha256).read_bytes(), tmp)
        try:
            tmp.rename(target)
        except OSError:  # another run extracted it first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def publish(platform: Platform, ws_id: str, name: str, data: bytes, docker: bool) -> PublishedView:
    """Store `data` (a bundle) as the next version of agent `name`; nothing is stored on refusal."""
    check_name(name, "Agent name")
    info = inspect_bundle(data)
    notes: list[str] = []
    validation = None
    if docker:
        if info.dockerfile is None:
            raise InvalidInput(
                "--docker was given but the bundle has no Dockerfile.",
                "Add a Dockerfile next to the entrypoint, or publish without --docker.",
            )
        validation = dockerfile.validate(info.dockerfile)
        if not validation.ok:
            first = next(f for f in validation.findings if f.severity == dockerfile.Severity.ERROR)
            raise InvalidDockerfile(
                f"The bundle's Dockerfile is not valid: line {first.line} {first.instruction}: "
                f"{first.message}",
                first.fix,
                findings=[f.to_dict() for f in validation.findings],
            )
    elif info.dockerfile is not None:
        notes.append(DOCKERFILE_NOT_USED)
    with platform.store.session() as s:
        ws = s.get(WorkspaceRow, ws_id)
        assert ws is not None
        pinned = info.manifest.environment
        if pinned:
            try:
                envs.resolve(s, ws, pinned)
            except NotFound:
                raise InvalidInput(
                    f"orch.yaml pins environment {pinned!r}, which does not exist in this workspace.",
                    "Run `orch env list` for the names, or create it first with `orch env create`.",
                ) from None
    env_id = None
    if docker and validation is not None and info.dockerfile is not None:
        env_id = _agent_environment(platform, ws_id, name, info.dockerfile, validation)
    path = bundle_path(platform, info.sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    with platform.store.session() as s:
        agent = s.scalar(select(AgentRow).where(AgentRow.workspace_id == ws_id, AgentRow.name == name))
        if agent is None:
            agent = AgentRow(id=new_id("agt"), workspace_id=ws_id, name=name, latest_version=0)
            s.add(agent)
            s.flush()
        agent.latest_version += 1
        version = _version_row(agent, info, env_id)
        s.add(version)
        s.flush()
        return PublishedView(agent=_agent_view(s, agent), version=_version_view(s, version), notes=notes)


def _version_row(agent: AgentRow, info: BundleInfo, env_id: str | None) -> AgentVersionRow:
    return AgentVersionRow(
        id=new_id("ver"),
        agent_id=agent.id,
        version=agent.latest_version,
        bundle_sha256=info.sha256,
        bundle_size=len(info.data),
        entrypoint=info.entrypoint.path,
        language=info.entrypoint.language.value,
        command=json.dumps(list(info.entrypoint.command)),
        manifest=info.manifest.model_dump_json(),
        pinned_environment=info.manifest.environment,
        dockerfile_environment_id=env_id,
        deps_files=json.dumps(sorted(dependency_files(info.files))),
    )


def _agent_environment(
    platform: Platform, ws_id: str, agent: str, text: str, validation: dockerfile.Validation
) -> str:
    """The environment built from an agent's Dockerfile: an existing one of this workspace with
    the same Dockerfile (so its build is reused at once), else a new one named after the agent."""
    wanted = dockerfile_hash(dockerfile.normalised(validation.instructions))
    with platform.store.session() as s:
        same = s.scalars(
            select(EnvironmentRow)
            .join(BuildRow, BuildRow.id == EnvironmentRow.build_id)
            .where(
                EnvironmentRow.scope == ws_id,
                BuildRow.dockerfile_hash == wanted,
                BuildRow.status != BuildStatus.FAILED.value,
            )
            .order_by(EnvironmentRow.created_at)
        ).first()
        if same is not None:
            return same.id
        taken = set(s.scalars(select(EnvironmentRow.name).where(EnvironmentRow.scope.in_([ws_id, "*"]))))
    base = f"{agent}-dockerfile"
    name = next(n for n in (base, *(f"{base}-{i}" for i in range(2, 10_000))) if n not in taken)
    return envs.create(platform, ws_id, name, text).id


def resolve_agent(s: Session, ws_id: str, ref: str) -> AgentRow:
    column = AgentRow.id if ref.startswith("agt_") else AgentRow.name
    agent = s.scalar(select(AgentRow).where(AgentRow.workspace_id == ws_id, column == ref))
    if agent is None:
        raise NotFound(
            f"No agent {ref!r} in this workspace.",
            "Run `orch agents list` to see the agents, or publish one with `orch publish`.",
        )
    return agent


def latest_version(s: Session, agent: AgentRow) -> AgentVersionRow:
    version = s.scalar(
        select(AgentVersionRow).where(
            AgentVersionRow.agent_id == agent.id, AgentVersionRow.version == agent.latest_version
        )
    )
    assert version is not None
    return version


def _version_view(s: Session, v: AgentVersionRow) -> AgentVersionView:
    env = s.get(EnvironmentRow, v.dockerfile_environment_id) if v.dockerfile_environment_id else None
    return AgentVersionView(
        id=v.id,
        version=v.version,
        entrypoint=v.entrypoint,
        language=v.language,
        command=json.loads(v.command),
        bundle_sha256=v.bundle_sha256,
        bundle_size=v.bundle_size,
        pinned_environment=v.pinned_environment,
        dockerfile_environment={"id": env.id, "name": env.name} if env else None,
        dependency_files=json.loads(v.deps_files),
        manifest=json.loads(v.manifest),
        created_at=v.created_at,
    )


def _agent_view(s: Session, agent: AgentRow) -> AgentView:
    return AgentView(
        id=agent.id,
        name=agent.name,
        latest_version=agent.latest_version,
        created_at=agent.created_at,
        latest=_version_view(s, latest_version(s, agent)),
    )


def list_agents(platform: Platform, ws_id: str) -> list[AgentView]:
    with platform.store.session() as s:
        rows = s.scalars(select(AgentRow).where(AgentRow.workspace_id == ws_id).order_by(AgentRow.name))
        return [_agent_view(s, a) for a in rows]


def show(platform: Platform, ws_id: str, ref: str) -> AgentView:
    with platform.store.session() as s:
        agent = resolve_agent(s, ws_id, ref)
        view = _agent_view(s, agent)
        versions = s.scalars(
            select(AgentVersionRow)
            .where(AgentVersionRow.agent_id == agent.id)
            .order_by(AgentVersionRow.version.desc())
        )
        view.versions = [_version_view(s, v) for v in versions]
        return view


def count_without_own_environment(platform: Platform, ws_id: str) -> int:
    """Agents whose next run follows the workspace default (no Dockerfile, no pin)."""
    with platform.store.session() as s:
        latest = (
            select(AgentVersionRow)
            .join(AgentRow, AgentRow.id == AgentVersionRow.agent_id)
            .where(AgentRow.workspace_id == ws_id, AgentVersionRow.version == AgentRow.latest_version)
            .subquery()
        )
        return int(
            s.scalar(
                select(func.count())
                .select_from(latest)
                .where(latest.c.dockerfile_environment_id.is_(None), latest.c.pinned_environment.is_(None))
            )
            or 0
        )


@usage.register
def _agents_using(s: Session, ws_id: str, env: EnvironmentRow) -> list[str]:
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
