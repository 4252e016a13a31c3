"""What the client returns for agents, environments and secrets, and their three resources.

Each record is built from the API's JSON by `_from_api`: the keys it knows are read, any key a
newer server adds is left out (the API only ever adds keys), and times become datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orch.client.transport import Transport, listed, segment

# What lists the names and ids each resource takes, for the fix of an empty one.
AGENTS, ENVIRONMENTS, SECRETS = "orch agents list", "orch env list", "orch secret list"


def when(value: Any) -> datetime | None:
    """An API time (ISO 8601) as a datetime; None stays None."""
    return datetime.fromisoformat(value) if value else None


class Resource:
    """One noun of the API on a client (`client.runs`, `client.secrets`...)."""

    def __init__(self, http: Transport) -> None:
        self._http = http


@dataclass(frozen=True)
class EnvironmentRef:
    """The environment a run or a sandbox got (both None: none yet, e.g. a queued run)."""

    id: str | None
    name: str | None

    @classmethod
    def _from_api(cls, data: Mapping[str, Any] | None) -> EnvironmentRef:
        data = data or {}
        return cls(id=data.get("id"), name=data.get("name"))


@dataclass(frozen=True)
class AgentVersion:
    id: str
    version: int
    entrypoint: str
    language: str
    command: list[str]
    bundle_sha256: str
    bundle_size: int
    pinned_environment: str | None
    dockerfile_environment: EnvironmentRef | None
    dependency_files: list[str]
    created_at: datetime | None

    @classmethod
    def _from_api(cls, data: Mapping[str, Any]) -> AgentVersion:
        built = data.get("dockerfile_environment")
        return cls(
            id=data["id"],
            version=data["version"],
            entrypoint=data["entrypoint"],
            language=data["language"],
            command=list(data.get("command") or []),
            bundle_sha256=data.get("bundle_sha256", ""),
            bundle_size=data.get("bundle_size", 0),
            pinned_environment=data.get("pinned_environment"),
            dockerfile_environment=EnvironmentRef._from_api(built) if built else None,
            dependency_files=list(data.get("dependency_files") or []),
            created_at=when(data.get("created_at")),
        )


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    latest_version: int
    latest: AgentVersion
    created_at: datetime | None
    versions: list[AgentVersion] | None  # every version, newest first: by `agents.get` only

    @classmethod
    def _from_api(cls, data: Mapping[str, Any]) -> Agent:
        versions = data.get("versions")
        return cls(
            id=data["id"],
            name=data["name"],
            latest_version=data["latest_version"],
            latest=AgentVersion._from_api(data["latest"]),
            created_at=when(data.get("created_at")),
            versions=None if versions is None else [AgentVersion._from_api(v) for v in versions],
        )


@dataclass(frozen=True)
class Environment:
    id: str
    name: str
    kind: str  # base, predefined or custom
    status: str  # not-built, queued, building, ready or failed
    default: bool  # the workspace's default environment
    description: str
    image: str | None
    error: str | None
    created_at: datetime | None
    dockerfile: str | None  # by `environments.get` only

    @classmethod
    def _from_api(cls, data: Mapping[str, Any]) -> Environment:
        return cls(
            id=data["id"],
            name=data["name"],
            kind=data["kind"],
            status=data["status"],
            default=bool(data.get("default")),
            description=data.get("description") or "",
            image=data.get("image"),
            error=data.get("error"),
            created_at=when(data.get("created_at")),
            dockerfile=data.get("dockerfile"),
        )


@dataclass(frozen=True)
class Secret:
    """A workspace secret's name and times; its value is never sent back."""

    name: str
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def _from_api(cls, data: Mapping[str, Any]) -> Secret:
        return cls(
            name=data["name"],
            created_at=when(data.get("created_at")),
            updated_at=when(data.get("updated_at")),
        )


class Agents(Resource):
    """`client.agents`: published agents (publish them with `orch publish`)."""

    def list(self) -> list[Agent]:
        return [Agent._from_api(a) for a in listed(self._http.get("/v1/agents"))]

    def get(self, name: str) -> Agent:
        """An agent by name or id, with every version."""
        return Agent._from_api(self._http.get(f"/v1/agents/{segment(name, AGENTS, numbers=False)}"))


class Environments(Resource):
    """`client.environments`: the images sandboxes run in."""

    def list(self) -> list[Environment]:
        return [Environment._from_api(e) for e in listed(self._http.get("/v1/environments"))]

    def get(self, name: str) -> Environment:
        """An environment by name or id."""
        path = f"/v1/environments/{segment(name, ENVIRONMENTS, numbers=False)}"
        return Environment._from_api(self._http.get(path))


class Secrets(Resource):
    """`client.secrets`: the workspace's secrets, which runs get as environment variables when
    their agent's orch.yaml asks for them (`secrets: [NAME]`)."""

    def set(self, name: str, value: str) -> Secret:
        """Create the secret `name` or replace its value."""
        return Secret._from_api(
            self._http.put(f"/v1/secrets/{segment(name, SECRETS, numbers=False)}", json={"value": value})
        )

    def list(self) -> list[Secret]:
        return [Secret._from_api(s) for s in listed(self._http.get("/v1/secrets"))]

    def delete(self, name: str) -> None:
        self._http.delete(f"/v1/secrets/{segment(name, SECRETS, numbers=False)}")
