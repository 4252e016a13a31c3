"""Tables. Changing one needs a migration in migrations/versions."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orch.store.types import Text, Timestamp  # NUL-safe on PostgreSQL; aware UTC everywhere


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class WorkspaceRow(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    default_environment_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class TokenRow(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # Platform-wide rights: create workspaces, see them all, manage any workspace's tokens.
    admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class EnvironmentRow(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_environment_scope_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The workspace id for custom environments, "*" for the shared base and predefined ones, so
    # that one unique constraint covers both (NULLs would never clash).
    scope: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    dockerfile: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str | None] = mapped_column(String(255))
    # Where a machine that lacks `image` pulls it from: REPOSITORY@sha256:... in the registry
    # (None: no registry was set when it was built, 0013). See builder/registry.py.
    image_digest: Mapped[str | None] = mapped_column(String(255))
    build_id: Mapped[str | None] = mapped_column(String(40))
    # The agent or service (its name) whose published Dockerfile this environment was made for
    # (0021): an agent delete lists it as unused then. None: the workspace made it (`orch env
    # create`), even if a publish reuses it since.
    made_for: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class BuildRow(Base):
    __tablename__ = "builds"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    cache: Mapped[str] = mapped_column(String(8), default="miss")
    cache_reason: Mapped[str] = mapped_column(Text, default="")
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    # The hash of the normalised Dockerfile alone, to tell "base image changed" from "new Dockerfile".
    dockerfile_hash: Mapped[str] = mapped_column(String(64), index=True)
    containerfile: Mapped[str] = mapped_column(Text)
    no_cache: Mapped[bool] = mapped_column(default=False)
    image: Mapped[str | None] = mapped_column(String(255))
    image_digest: Mapped[str | None] = mapped_column(String(255))  # as EnvironmentRow's (0013)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    step_text: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    failed_step: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    # The instance of the platform whose worker claimed the row (None: not claimed yet, or before
    # migration 0006); at start a server settles only its own rows.
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    node: Mapped[str | None] = mapped_column(String(63))  # the cluster node that took it (0015)
    queued_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class AgentRow(Base):
    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_agent_workspace_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    # The last version number given, deleted versions included: the next publish gets one more,
    # so a number never names two bundles (0007).
    last_published: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class AgentVersionRow(Base):
    """One immutable published version of an agent: its bundle and what publish derived from it."""

    __tablename__ = "agent_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version", name="uq_agent_version"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    bundle_size: Mapped[int] = mapped_column(BigInteger)
    entrypoint: Mapped[str] = mapped_column(Text)  # a bundle path: no length limit (0005)
    language: Mapped[str] = mapped_column(String(16))
    command: Mapped[str] = mapped_column(Text)  # JSON argv
    manifest: Mapped[str] = mapped_column(Text)  # JSON of the parsed manifest
    pinned_environment: Mapped[str | None] = mapped_column(String(63))
    # The environment built from the bundle's Dockerfile (publish --docker), if any.
    dockerfile_environment_id: Mapped[str | None] = mapped_column(String(40), index=True)
    deps_files: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of dependency files
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[str] = mapped_column(String(40), index=True)
    agent_version_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), index=True)
    input: Mapped[str] = mapped_column(Text, default="")
    env: Mapped[str] = mapped_column(Text, default="{}")  # JSON of --env variables
    timeout: Mapped[int | None] = mapped_column(Integer)
    environment_id: Mapped[str | None] = mapped_column(String(40))
    environment_name: Mapped[str | None] = mapped_column(String(63))
    environment_rule: Mapped[str | None] = mapped_column(String(32))
    isolation: Mapped[str | None] = mapped_column(String(16))  # runc | gvisor, once chosen
    image: Mapped[str | None] = mapped_column(String(255))
    deps: Mapped[str] = mapped_column(String(16), default="none")  # none | cached | installed
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    container: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(32))  # see BuildRow.claimed_by
    node: Mapped[str | None] = mapped_column(String(63))  # see BuildRow.node
    queued_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # A stream reached its bound (MAX_OUTPUT) and the rest of it was not kept (0014).
    truncated: Mapped[bool] = mapped_column(default=False)


class RunOutputRow(Base):
    """A piece of a run's stream (stdout, stderr, log) from byte `start` (0014): any server of
    the store answers for any run, wherever it ran (services/run_output.py)."""

    __tablename__ = "run_output"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(8), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class BuildLogRow(Base):
    """A piece of a build's log from byte `start` (0014): any server of the store answers for
    any build, wherever it ran (services/build_output.py)."""

    __tablename__ = "build_log"
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class BundleRow(Base):
    """A bundle an agent version or a service deployment runs, by content (0014): kept once, and
    read by any machine of the store (services/bundles.py)."""

    __tablename__ = "bundles"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ServiceRow(Base):
    """An always-on service: what should run (desired, the serving version) and what runs now."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_service_workspace_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    desired: Mapped[str] = mapped_column(String(16), default="running")  # running | stopped
    state: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer, default=0)  # the serving version; 0: none yet
    latest_version: Mapped[int] = mapped_column(Integer, default=0)  # the last deployment's
    image: Mapped[str | None] = mapped_column(String(255))
    command: Mapped[str] = mapped_column(Text, default="[]")  # JSON argv
    run_command: Mapped[str | None] = mapped_column(Text)
    manifest: Mapped[str] = mapped_column(Text, default="{}")  # JSON of the parsed manifest
    restarts: Mapped[int] = mapped_column(Integer, default=0)  # of all its replicas
    last_exit: Mapped[int | None] = mapped_column(Integer)
    last_output: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ServiceReplicaRow(Base):
    """One of a service's containers (0012): slot 0 .. replicas-1, each supervised on its own
    (backoff, quick crashes); the proxy spreads requests over those running."""

    __tablename__ = "service_replicas"
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)  # what it runs (mid-rollout, not every slot's alike)
    state: Mapped[str] = mapped_column(String(16))  # a ServiceState: starting, running, restarting, ...
    container: Mapped[str | None] = mapped_column(String(128))
    address: Mapped[str | None] = mapped_column(String(64))
    quick_crashes: Mapped[int] = mapped_column(Integer, default=0)
    next_start_at: Mapped[datetime | None] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)


class ServiceLogRow(Base):
    """A piece of a service's output (all its containers', as its supervisor reads their log
    files) from byte `start` of the service's output (0017): any server of the store answers for
    any service, wherever it runs; the oldest pieces go past a bound (services/deployed_logs.py)."""

    __tablename__ = "service_log"
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ServiceLogCursorRow(Base):
    """How far into a container's log file (its bytes, as conmon writes them) the service's
    output is stored (0017); gone with the container."""

    __tablename__ = "service_log_cursors"
    container: Mapped[str] = mapped_column(String(128), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    read: Mapped[int] = mapped_column(BigInteger, default=0)


class ServiceDeploymentRow(Base):
    """One `orch service deploy`: its bundle, the image built from it, and how the switch went."""

    __tablename__ = "service_deployments"
    __table_args__ = (UniqueConstraint("service_id", "version", name="uq_service_deployment_version"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(Text)  # JSON argv
    run_command: Mapped[str | None] = mapped_column(Text)
    manifest: Mapped[str] = mapped_column(Text)
    deps_files: Mapped[str] = mapped_column(Text, default="[]")
    # The environment built from the bundle's Dockerfile (0012), which the image is built on.
    environment_id: Mapped[str | None] = mapped_column(String(40))
    image: Mapped[str | None] = mapped_column(String(255))
    # Where a machine that lacks `image` pulls it from (0016): REPOSITORY@sha256:..., pushed
    # after the build when a registry is set (None: none was).
    image_digest: Mapped[str | None] = mapped_column(String(255))
    container: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    claimed_by: Mapped[str | None] = mapped_column(String(32))  # see BuildRow.claimed_by
    # The service was stopped while this deployment was under way (0020): it ends with its
    # version current and the service still stopped (`orch service restart` clears it).
    stop_requested: Mapped[bool] = mapped_column(default=False)
    queued_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class SecretRow(Base):
    """A workspace secret (0009): its value encrypted with the platform's secret key, which is not
    in the database (services/secrets.py)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_secret_workspace_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    ciphertext: Mapped[str] = mapped_column(Text)  # AES-GCM, base64 (secret/box.py)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class SandboxRow(Base):
    """A sandbox on demand (0010): held open by one server (`owner`), driven step by step, removed
    when asked, when idle for `timeout` seconds, at `deadline`, or when its server restarts."""

    __tablename__ = "sandboxes"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    environment_id: Mapped[str] = mapped_column(String(40))
    environment_name: Mapped[str] = mapped_column(String(63))
    isolation: Mapped[str] = mapped_column(String(16))  # runc | gvisor
    image: Mapped[str] = mapped_column(String(255))
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    cpus: Mapped[float] = mapped_column()
    pids: Mapped[int] = mapped_column(Integer)
    network: Mapped[bool] = mapped_column(default=False)
    timeout: Mapped[int] = mapped_column(Integer)  # idle seconds before it is removed
    container: Mapped[str] = mapped_column(String(128))  # the runtime's name for it
    owner: Mapped[str] = mapped_column(String(32), index=True)  # the platform instance holding it
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    deadline: Mapped[datetime] = mapped_column(Timestamp)  # the end of its maximum lifetime
    removed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class RunEventRow(Base):
    """One step of a run's managed loop (0011), numbered from 1 within the run (services/run_events.py)."""

    __tablename__ = "run_events"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))  # model_call, tool_call, tool_result, final
    at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    data: Mapped[str] = mapped_column(Text)  # JSON object: the event's own fields


class BaseImageRow(Base):
    """A base image pushed to the registry (0013): its local tag, which names its recipe's
    version, and the digest a machine without it pulls (`orch admin build-images` writes it)."""

    __tablename__ = "base_images"
    image: Mapped[str] = mapped_column(String(255), primary_key=True)  # localhost/orch/NAME:RECIPE
    name: Mapped[str] = mapped_column(String(63), index=True)  # the recipe: python, node, ...
    digest: Mapped[str] = mapped_column(String(255))  # REPOSITORY@sha256:...
    pushed_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class NodeRow(Base):
    """A machine of the cluster that joined as an orch node (0015; docs/scale.md): it claims
        runs and builds from the store's queues on its own Podman. `instance` is its platform's
        (what its claims record in `claimed_by`); `state` is up, stopped or lost; `images` is a JSON
        list of the environments' images it holds, for placement; `seen_at` its last heartbeat; `proxy`
    the HOST:PORT where it serves the services it holds to the cluster's servers (0018);
    `memory_budget` its `run_memory`, for placing sandboxes on demand (0019; None: not said)."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    instance: Mapped[str] = mapped_column(String(32), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    proxy: Mapped[str | None] = mapped_column(String(300))
    ray_node: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    cpus: Mapped[int] = mapped_column(Integer)
    memory: Mapped[int] = mapped_column(BigInteger)
    slots: Mapped[int] = mapped_column(Integer)
    memory_budget: Mapped[int | None] = mapped_column(BigInteger)
    running: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[str] = mapped_column(Text, default="[]")
    started_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ServiceLeaseRow(Base):
    """Which platform supervises a service (0016; services/leases.py): `holder` is its instance,
    and it holds the service until `expires_at` unless it renews; another takes it over after."""

    __tablename__ = "service_leases"
    service_id: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
