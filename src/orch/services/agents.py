"""Agent use cases: publish a bundle as a new immutable version, list and show agents (the
bundles themselves: bundles.py; deleting agents and versions: agent_deletes.py)."""

from __future__ import annotations

import json
import logging
import shlex
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from orch import dockerfile
from orch.builder.cache import dockerfile_hash
from orch.bundle import BundleInfo, extract_bundle, inspect_bundle
from orch.bundle.bytecode import compile_modules
from orch.bundle.contents import read_contents
from orch.errors import InvalidDockerfile, InvalidInput, NotFound
from orch.kept import kept
from orch.loop.endpoints import check_allowed
from orch.models import BuildStatus, EnvStatus, check_name, new_id
from orch.sandbox.deps import dependency_files
from orch.sandbox.spec import BUNDLE_MISFIT_FIX, bundle_misfit, on_tmpfs, tree_copy_bytes
from orch.services import bundles, refs
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.services.views import AgentVersionView, AgentView, PublishedView
from orch.store.db import Clash, Gone, hold, hold_all
from orch.store.schema import (
    AgentRow,
    AgentVersionRow,
    BuildRow,
    EnvironmentRow,
    WorkspaceRow,
)

log = logging.getLogger(__name__)

DOCKERFILE_NOT_USED = (
    "The bundle has a Dockerfile, which was not used: publish again asking for it to be built "
    "(`orch publish DIR --docker`; the API's `docker=true`) to run the agent in an environment of "
    "its own."
)


def publish(platform: Platform, ws_id: str, name: str, data: bytes, docker: bool) -> PublishedView:
    """Store `data` (a bundle) as the next version of agent `name`; nothing is stored on refusal."""
    check_name(name, "Agent name", id_prefix="agt_")
    info = inspect_bundle(data)
    if (loop := info.manifest.loop) is not None:  # the server calls only the allowed endpoints
        check_allowed(loop.provider, loop.base_url, platform.config.model_endpoints)
    notes: list[str] = []
    validation = None
    if docker:
        if info.dockerfile is None:
            raise InvalidInput(
                "A build of the bundle's Dockerfile was asked for, but the bundle has no Dockerfile.",
                "Add a Dockerfile next to the entrypoint, or publish without asking for a build.",
            )
        validation = checked_dockerfile(info.dockerfile)
        notes += dockerfile_notes(validation, what_runs("agent", info, info.entrypoint.command))
    elif info.dockerfile is not None:
        try:
            checked_dockerfile(info.dockerfile)
            notes.append(DOCKERFILE_NOT_USED)
        except InvalidDockerfile as refused:  # not advised to ask for a build that would be refused
            notes.append(_unused_invalid_note(refused))
    if misfit := _misfit(info):
        notes.append(f"{misfit} Runs of this version will fail before the agent starts. {BUNDLE_MISFIT_FIX}")
    with platform.store.session() as s:
        ws = s.get(WorkspaceRow, ws_id)
        if ws is None:  # deleted since this request's token check (services/workspace_deletes.py)
            raise Gone()
        pinned = info.manifest.environment
        if pinned:
            env = _pinned(s, ws, pinned)
            state = envs.view(platform, s, ws, env)
            if state.status == EnvStatus.FAILED and not env.image:  # with one, runs run it
                notes.append(
                    f"orch.yaml pins environment {env.name}, whose last build failed "
                    f"({_plain(state.error)}); runs of this version will fail until it is built. "
                    "See its build log, then rebuild it or pin another environment."
                )
    env_id = None
    if docker and validation is not None and info.dockerfile is not None:
        env_id, note = dockerfile_environment(platform, ws_id, name, info.dockerfile, validation)
        notes += [note] if note else []
    for attempt in range(2):
        try:
            return _store_version(platform, ws_id, name, info, env_id, notes)
        except Clash:  # the agent's first publish at the same moment made it: a version of that one
            if attempt:
                raise
    raise AssertionError("unreachable")


def _store_version(
    platform: Platform, ws_id: str, name: str, info: BundleInfo, env_id: str | None, notes: list[str]
) -> PublishedView:
    with bundles.lock(platform), platform.store.session() as s:
        # The pin is a name, no foreign key: checked again under the workspace's hold, which an
        # environment's delete holds whole while it counts the environment's users
        # (environments.delete), so either that delete sees this version and refuses, or it
        # committed first and this publish is refused. On SQLite this takes the store's one
        # writer now, so what follows reads the state as it is.
        hold(s, WorkspaceRow, ws_id, shared=True)
        ws = s.get(WorkspaceRow, ws_id)
        if ws is None:  # deleted since the checks of publish()
            raise Gone()
        if info.manifest.environment:
            _pinned(s, ws, info.manifest.environment)
        bundles.keep(s, info.sha256, info.data)
        # Held: a delete of this agent waits for the new version, or this publish for the delete
        # (then the agent is made afresh). Not a plain FOR UPDATE, which holds nothing on SQLite.
        named = (AgentRow.workspace_id == ws_id) & (AgentRow.name == name)
        hold_all(s, AgentRow, named)
        agent = s.scalar(select(AgentRow).where(named))
        if agent is None:
            agent = AgentRow(
                id=new_id("agt"), workspace_id=ws_id, name=name, latest_version=0, last_published=0
            )
            s.add(agent)
            s.flush()
        agent.last_published += 1
        agent.latest_version = agent.last_published
        version = _version_row(agent, info, env_id)
        s.add(version)
        s.flush()
        return PublishedView(agent=_agent_view(s, agent), version=_version_view(s, version), notes=notes)


def _pinned(s: Session, ws: WorkspaceRow, pinned: str) -> EnvironmentRow:
    """The environment orch.yaml pins, or InvalidInput: nothing is stored."""
    try:
        return envs.resolve(s, ws, pinned)
    except NotFound:
        raise InvalidInput(
            f"orch.yaml pins environment {pinned!r}, which does not exist in this workspace.",
            "See `orch env list` for the names, or create that environment first.",
        ) from None


def _misfit(info: BundleInfo) -> str | None:
    """Why the bundle does not fit the working directory its own orch.yaml's memory limit gives
    a run (the run fails, saying so: workers/runs.py); None when it fits. The run counts the
    bundle as extracted, with the bytecode compiled for its modules, so this counts it so too:
    exactly, by extracting and compiling it, when it could come near the limit (its files, and
    for each module as much again: extraction keeps no cache larger than its module), since that takes
    seconds for a bundle of many modules (a tester's 1,500 took 25 s); below that, it fits."""
    memory = info.manifest.resources.memory_bytes
    # Extraction compiles modules when there are two or more (links to them count here: never fewer).
    modules = [len(data) for path, data in info.files.items() if path.endswith(".py")]
    files = on_tmpfs(map(len, info.files.values()))
    near = len(modules) >= 2 and bundle_misfit(files + on_tmpfs(modules), memory) is not None
    if near and (copy := _extracted_copy_bytes(info)) is not None:
        return bundle_misfit(copy, memory)
    if bundle_misfit(files, memory) is None:
        return None
    # Its links to files were counted as the files: a run's copy keeps them links.
    return bundle_misfit(on_tmpfs(map(len, read_contents(info.data).files.values())), memory)


def _extracted_copy_bytes(info: BundleInfo) -> int | None:
    """What a run's copy of the bundle takes, bytecode included. The bundle is extracted and its
    modules compiled as each machine does it before its first run of it (services/bundles.py),
    into a directory removed at once, and measured as the run measures it: so the sizes of the
    compiled files are not estimated, and match the run's wherever it has the server's Python
    (the compiler, bounded, runs in a child process). None when the bundle could not be written
    here (a full disk, say); the caller then counts it without bytecode, as before."""
    try:
        with tempfile.TemporaryDirectory(prefix="orch-publish-") as tmp:
            extract_bundle(info.data, Path(tmp))
            compile_modules(Path(tmp))
            return tree_copy_bytes(tmp)
    except OSError as e:
        log.warning("the bundle %s was not extracted to measure it: %s", info.sha256[:12], e)
        return None


def _plain(error: str | None) -> str:
    """A build's error, to quote inside a sentence."""
    return (error or "no error was recorded").strip().rstrip(".")


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


# How many of an unused Dockerfile's errors a publish's note names (`orch env validate` says all).
NOTED_ERRORS = 5


def _unused_invalid_note(refused: InvalidDockerfile) -> str:
    """The note for a bundle's Dockerfile that was not used and is not valid: each of its errors
    (up to NOTED_ERRORS; fixing one at a time took a publish each), the first one's fix."""
    errors = [
        f"line {f['line']} {f['instruction']}: {str(f['message']).rstrip('.')}"
        for f in refused.details.get("findings") or []
        if f.get("severity") == dockerfile.Severity.ERROR
    ] or [refused.message.removeprefix("The bundle's Dockerfile is not valid: ").rstrip(".")]
    more = len(errors) - NOTED_ERRORS
    said = "; ".join(errors[:NOTED_ERRORS]) + (
        f"; and {more} more (orch env validate says all)" if more > 0 else ""
    )
    count = f"{len(errors)} errors: " if len(errors) > 1 else ""
    return (
        "The bundle has a Dockerfile, which was not used; it is not valid, and a build of it would "
        f"be refused ({count}{said}). {refused.fix}"
    )


def checked_dockerfile(text: str) -> dockerfile.Validation:
    """A bundle's Dockerfile validated as an environment's is; InvalidDockerfile if it is not."""
    validation = dockerfile.validate(text)
    if not validation.ok:
        first = next(f for f in validation.findings if f.severity == dockerfile.Severity.ERROR)
        raise InvalidDockerfile(
            f"The bundle's Dockerfile is not valid: line {first.line} {first.instruction}: {first.message}",
            first.fix,
            findings=[f.to_dict() for f in validation.findings],
        )
    return validation


def dockerfile_notes(validation: dockerfile.Validation, runs_instead: str) -> list[str]:
    """A note for each warning of a bundle's Dockerfile (an instruction left out of the build, a
    `# syntax=` line), as `orch env validate` says it. Docker runs a Dockerfile's CMD or
    ENTRYPOINT, so a note on one says what runs instead: `runs_instead` (what_runs)."""
    notes = []
    for f in validation.findings:
        if f.severity is not dockerfile.Severity.WARNING:
            continue
        where = f"Dockerfile line {f.line}" if f.line else "Dockerfile"
        instead = f" {runs_instead}" if f.instruction in ("CMD", "ENTRYPOINT") else ""
        notes.append(f"{where}: {f.message}{instead} {f.fix}")
    return notes


def what_runs(kind: str, info: BundleInfo, argv: Sequence[str], given: bool = False) -> str:
    """The sentence saying what the `kind` (agent, service) runs, `argv`, and where that comes
    from; `given`: a command given with the deploy."""
    if info.manifest.has_loop:
        return f"The {kind} runs its managed loop instead (orch.yaml's `loop:`)."
    if given:
        source = "the command given to the deploy"
    elif info.manifest.command is not None:
        source = "orch.yaml's `runtime.command`"
    else:
        source = "the default for its entrypoint; `runtime.command` in orch.yaml sets another"
    return f"The {kind} runs `{shlex.join(argv)}` instead ({source})."


def dockerfile_environment(
    platform: Platform, ws_id: str, agent: str, text: str, validation: dockerfile.Validation
) -> tuple[str, str | None]:
    """The environment built from a bundle's Dockerfile (an agent's or a service's, named
    `agent`), and a note for the answer: an
    existing one of this workspace with the same Dockerfile (so its build is reused at once);
    else one whose build of it failed, built again (rather than a new environment for each
    attempt, with the failure left unsaid); else a new one named after the agent
    (_environment_name), recorded as made for it (so an agent delete may name it as unused)."""
    # One look-and-make at a time: two publishes of one Dockerfile at once made two environments
    # (of two agents), or one lost at the name the other took and was refused 409 (of one agent).
    with kept(platform, "_dockerfile_environments", threading.Lock):
        return _dockerfile_environment(platform, ws_id, agent, text, validation)


def _dockerfile_environment(
    platform: Platform, ws_id: str, agent: str, text: str, validation: dockerfile.Validation
) -> tuple[str, str | None]:
    wanted = dockerfile_hash(dockerfile.normalised(validation.instructions))
    with platform.store.session() as s:
        same = s.execute(
            select(EnvironmentRow.id, EnvironmentRow.name, BuildRow.status, BuildRow.error)
            .join(BuildRow, BuildRow.id == EnvironmentRow.build_id)
            .where(EnvironmentRow.scope == ws_id, BuildRow.dockerfile_hash == wanted)
            .order_by(EnvironmentRow.created_at)
        ).all()
        taken = set(s.scalars(select(EnvironmentRow.name).where(EnvironmentRow.scope.in_([ws_id, "*"]))))
    for env_id, _name, status, _error in same:
        if status != BuildStatus.FAILED.value:
            return env_id, None
    if same:
        env_id, env_name, _status, error = same[0]
        again = envs.build(platform, ws_id, env_id)
        if again.status == EnvStatus.READY:  # a cache hit on a build elsewhere
            return env_id, None
        return env_id, (
            f"This Dockerfile failed to build before, as environment {env_name} ({_plain(error)}); "
            "it is being built again, and runs of this version wait for it."
        )
    return envs.create(platform, ws_id, _environment_name(agent, taken), text, made_for=agent).id, None


_NAME_MAX = 63  # characters of a name (models.check_name)


def _environment_name(agent: str, taken: set[str]) -> str:
    """The name of a new environment for `agent`'s Dockerfile, free among `taken`:
    `AGENT-dockerfile`, else `AGENT-dockerfile-2`, `-3`, ... Whatever the agent's (valid) name,
    this one is valid: the agent's part is cut short so the whole has at most 63 characters,
    and an `env_` at its start, which only an environment's id may have, is written `env-`."""
    stem = "env-" + agent.removeprefix("env_") if agent.startswith("env_") else agent
    suffixes = ("-dockerfile", *(f"-dockerfile-{i}" for i in range(2, 10_000)))
    return next(n for n in (stem[: _NAME_MAX - len(x)] + x for x in suffixes) if n not in taken)


def resolve_agent(s: Session, ws_id: str, ref: str, lock: bool = False) -> AgentRow:
    """The agent called `ref` (an id or a name) in this workspace, or NotFound; with `lock`, its
    row stays held until the session ends (against a concurrent publish or delete), on either
    store: held before it is read (store/db.py hold; a FOR UPDATE holds nothing on SQLite)."""
    if lock:
        column = AgentRow.id if ref.startswith("agt_") else AgentRow.name
        hold_all(s, AgentRow, (AgentRow.workspace_id == ws_id) & (column == ref))
    return refs.find(
        s,
        AgentRow,
        ref,
        AgentRow.workspace_id == ws_id,
        id_prefix="agt_",
        what="agent",
        fix="See `orch agents list` for the names, or publish this one first.",
        lock=lock,
    )


# Built once: every run's creation asks it.
_LATEST = (
    select(AgentVersionRow)
    .where(AgentVersionRow.agent_id == bindparam("agent_id"), AgentVersionRow.version == bindparam("version"))
    .with_for_update(read=True, key_share=True)
)


def latest_version(s: Session, agent: AgentRow) -> AgentVersionRow:
    """The version a new run of `agent` runs. Its row is key-share locked until the session ends:
    a delete of the version waits for the run being created, then sees it (and refuses)."""
    version = s.scalar(_LATEST, {"agent_id": agent.id, "version": agent.latest_version})
    if version is None:  # deleted between reading the agent and its version
        raise NotFound(
            f"{agent.name} v{agent.latest_version} was deleted just now.",
            "See the agent's versions for what is left, then try again.",
        )
    return version


def _latest(s: Session, agent: AgentRow) -> AgentVersionRow:
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
        latest=_version_view(s, _latest(s, agent)),
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
