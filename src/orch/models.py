"""Domain records and state enums shared by every layer."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from orch.errors import InvalidInput


class EnvKind(StrEnum):
    BASE = "base"  # chosen by entrypoint; an image built from Debian packages
    PREDEFINED = "predefined"  # shared by all workspaces, defined by a Dockerfile we ship
    CUSTOM = "custom"  # built from a workspace's Dockerfile, owned by that workspace


class BuildStatus(StrEnum):
    QUEUED = "queued"  # in the store, waiting for a build worker
    BUILDING = "building"  # claimed by a worker; Podman is running
    READY = "ready"  # the image exists (built now, or reused from the cache)
    FAILED = "failed"  # ended without an image; `error` says why

    @property
    def final(self) -> bool:
        return self in (BuildStatus.READY, BuildStatus.FAILED)


# The only legal moves of a build; `store` refuses any other.
BUILD_TRANSITIONS: dict[BuildStatus, frozenset[BuildStatus]] = {
    BuildStatus.QUEUED: frozenset({BuildStatus.BUILDING, BuildStatus.READY, BuildStatus.FAILED}),
    BuildStatus.BUILDING: frozenset({BuildStatus.READY, BuildStatus.FAILED, BuildStatus.QUEUED}),
    BuildStatus.READY: frozenset(),
    BuildStatus.FAILED: frozenset(),
}


class RunStatus(StrEnum):
    QUEUED = "queued"  # in the store, waiting for a run worker
    STARTING = "starting"  # claimed: environment resolved and made ready, dependencies installed
    RUNNING = "running"  # the agent's process runs in its sandbox
    SUCCEEDED = "succeeded"  # exited 0
    FAILED = "failed"  # exited non-zero, hit a limit, or could not start; `reason` says which
    TIMED_OUT = "timed_out"  # stopped at its wall-clock limit
    CANCELLED = "cancelled"  # stopped by `orch runs cancel`

    @property
    def final(self) -> bool:
        return self in _FINAL_RUN


_FINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED})

# The only legal moves of a run; `services.runs` refuses any other.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.STARTING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.STARTING: frozenset({RunStatus.RUNNING, RunStatus.QUEUED, *_FINAL_RUN}),
    RunStatus.RUNNING: _FINAL_RUN,
    **{s: frozenset() for s in _FINAL_RUN},
}


class EnvironmentRule(StrEnum):
    """Why a run got its environment (SPEC §2.4), in the order the rules are tried."""

    DOCKERFILE = "dockerfile"
    PINNED = "pinned"
    WORKSPACE_DEFAULT = "workspace-default"
    BASE = "base"


class EnvStatus(StrEnum):
    NOT_BUILT = "not-built"  # predefined, never built yet: built on first use
    QUEUED = "queued"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def check_name(name: str, what: str = "Environment name") -> str:
    """Return `name` if it is a valid resource name, else raise InvalidInput."""
    if not _NAME.match(name or ""):
        raise InvalidInput(
            f"{what} {name!r} is not valid.",
            "Use 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending with a "
            "letter or digit.",
        )
    return name


def new_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


@dataclass(frozen=True)
class Environment:
    id: str
    name: str
    kind: EnvKind
    status: EnvStatus
    workspace_id: str | None
    image: str | None
    build_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class Build:
    id: str
    environment_id: str
    status: BuildStatus
    cache: str  # "hit" or "miss"
    cache_reason: str
    cache_key: str
    image: str | None
    step: int
    total_steps: int
    step_text: str
    error: str | None
    failed_step: str | None
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    size_bytes: int | None
    attempts: int

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
