"""What the API returns, as pydantic models: the JSON contract of its answers (the OpenAPI schema
at /docs is generated from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class BuildView(BaseModel):
    id: str
    status: str
    cache: str
    cache_reason: str
    cache_key: str
    step: int
    total_steps: int
    step_text: str
    error: str | None
    failed_step: str | None
    # After a failure: the lines of its output that matter (the failing step, its error lines,
    # the last lines), not just the last ones. The whole log: /environments/{ref}/logs.
    log_tail: str
    image: str | None
    # Where the image is in the registry, REPOSITORY@sha256:... (None: no registry is set).
    image_digest: str | None = None
    # The platform's base image the build starts FROM (None until the build starts).
    base_image: str | None = None
    size_bytes: int | None
    attempts: int
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None


class EnvironmentView(BaseModel):
    id: str
    name: str
    kind: str
    status: str
    default: bool
    description: str
    image: str | None
    # Where a machine without the image pulls it: REPOSITORY@sha256:... (docs/registry.md).
    image_digest: str | None = None
    cache: str | None
    cache_reason: str | None
    build_id: str | None
    error: str | None
    created_at: datetime
    build: BuildView | None = None
    dockerfile: str | None = None


class BuildLogChunk(BaseModel):
    text: str = Field(description="The log from the requested offset (at most 1 MiB of it).")
    offset: int = Field(description="Where the text ends: ask again from here for what follows.")
    size: int = Field(description="The log's length in bytes so far.")
    more: bool = Field(description="True when the log goes on past `offset` already: ask again now.")
    status: str = Field(description="The build's status; once ready or failed, the log is complete.")
    build_id: str | None = Field(None, description="The build whose log this is (None: never built).")


class FindingView(BaseModel):
    line: int
    instruction: str
    severity: str
    message: str
    fix: str


class ValidationView(BaseModel):
    ok: bool
    findings: list[FindingView]


class CreatedEnvironment(EnvironmentView):
    warnings: list[FindingView] = []


class DefaultView(BaseModel):
    default: EnvironmentView | None
    # Agents with no Dockerfile and no pin: they follow the default on their next run.
    affected_agents: int = 0


class AgentVersionView(BaseModel):
    id: str
    version: int
    entrypoint: str
    language: str
    command: list[str]
    bundle_sha256: str
    bundle_size: int
    pinned_environment: str | None
    dockerfile_environment: dict[str, str] | None
    dependency_files: list[str]
    manifest: dict[str, Any]
    created_at: datetime


class AgentView(BaseModel):
    id: str
    name: str
    latest_version: int
    created_at: datetime
    latest: AgentVersionView
    versions: list[AgentVersionView] | None = None


class PublishedView(BaseModel):
    agent: AgentView
    version: AgentVersionView
    notes: list[str] = []


class RunEnvironment(BaseModel):
    id: str | None
    name: str | None


class RunUsage(BaseModel):
    """A managed-loop run's model usage: the sums over its model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0


class RunView(BaseModel):
    id: str
    agent: str
    agent_version: int
    status: str
    exit_code: int | None
    reason: str | None
    environment: RunEnvironment
    environment_rule: str | None
    isolation: str | None = None  # runc or gvisor: the runtime the sandbox ran under
    node: str | None = None  # the cluster node that took the run (docs/scale.md); None on one machine
    deps: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    usage: RunUsage | None = None  # a managed loop's tokens and model calls (None: not a loop run)
    truncated: bool = False  # its stdout or stderr was cut at the 1 MiB kept per stream


class RunLogs(BaseModel):
    stdout: str
    stderr: str
    log: str
    offsets: dict[str, int]
    status: str
    truncated: bool = False
    # In the answer that finds the run ended: the run itself, so a follower needs no other request.
    run: RunView | None = None


class DeploymentView(BaseModel):
    id: str
    service: str
    version: int
    status: str
    command: list[str]
    run_command: str | None
    dependency_files: list[str]
    image: str | None
    error: str | None
    log_tail: str
    queued_at: datetime
    finished_at: datetime | None
    public: bool = False  # the proxy answers anyone, without a token
    # A deploy that would change nothing (same bundle, command and manifest; the version serves):
    # this is the serving version's deployment, and nothing was built or restarted.
    unchanged: bool = False
    notes: list[str] = []


class ReplicaView(BaseModel):
    slot: int
    version: int
    state: str  # starting, running (the proxy sends it requests), restarting, crash-looping
    container: str | None
    started_at: datetime | None


class ServiceView(BaseModel):
    id: str
    name: str
    workspace: str
    state: str
    desired: str
    url: str  # the path on the server that proxies to the service
    public: bool = False  # the serving version's: the proxy answers anyone, without a token
    version: int
    latest_version: int
    image: str | None
    command: list[str]
    run_command: str | None
    container: str | None
    restarts: int  # of all its replicas
    started_at: datetime | None
    uptime: float | None  # seconds since its oldest running replica started, while it runs
    last_exit: int | None
    last_output: str
    error: str | None
    created_at: datetime
    deployment: DeploymentView | None = None  # the latest one
    replicas: list[ReplicaView] = []  # its containers, by slot (`container` is the first one's)
    desired_replicas: int = 0  # what the serving version asks for (`replicas:` in orch.yaml)
    node: str | None = None  # the cluster node whose supervisor runs it (None: one machine)


class ServiceLogs(BaseModel):
    text: str
    offset: int
    state: str


class WorkspaceView(BaseModel):
    id: str
    name: str
    created_at: datetime


class NewWorkspaceView(WorkspaceView):
    token: str = Field(description="The workspace's first token (not an admin one): shown this once.")
    token_id: str


class TokenView(BaseModel):
    id: str
    name: str
    workspace: str
    workspace_id: str
    admin: bool
    created_at: datetime


class NewTokenView(TokenView):
    token: str = Field(description="The token itself: shown this once, stored only as a hash.")


class SecretView(BaseModel):
    """A workspace secret as every answer shows it: its name and times, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


class NodeView(BaseModel):
    """A machine of the cluster that joined as an orch node (docs/scale.md)."""

    id: str
    address: str
    state: str  # up, stopped or lost
    capacity: dict[str, int]  # {cpus, memory (bytes), slots (sandboxes at once)}
    running: int  # runs and builds in flight there now
    proxy: str | None  # HOST:PORT where it serves the services it holds, to the cluster's servers
    started_at: datetime
    seen_at: datetime
