"""What the client returns for agents, environments and secrets, and their three resources.

Each record is built from the API's JSON by `_from_api`: the keys it knows are read, any key a
newer server adds is left out (the API only ever adds keys), and times become datetimes. A field
of another type than orch sends (null or a number where an object or a time goes, a time that is
not one; text, a number or true/false of another kind, or null where orch never sends null)
raises `not_understood`, as a missing one does, never AttributeError or ValueError, and is never
handed on to fail later in the caller's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, overload

from orch.client.transport import Transport, as_json_text, listed, not_understood, segment
from orch.errors import OrchError

# What lists the names and ids each resource takes, for the fix of an empty one.
AGENTS, ENVIRONMENTS, SECRETS = "orch agents list", "orch env list", "orch secret list"

T = TypeVar("T")
_NEEDED: Any = object()  # a scalar reader's default when the answer must hold the field


def _wrong(data: Mapping[str, Any], key: str, value: Any, wanted: str) -> OrchError:
    """What a field `key` of an answer `data` (a `Reply`, which knows its URL) that holds
    `value`, not `wanted`, raises."""
    url = getattr(data, "url", None) or "its address"
    return not_understood(url, f"{as_json_text(value)} as `{key}` where orch sends {wanted}")


def when(data: Mapping[str, Any], key: str) -> datetime | None:
    """The API time (ISO 8601) `data[key]` as a datetime; None (or absent) stays None."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise _wrong(data, key, value, "a time")


def part(data: Mapping[str, Any], key: str, *, needed: bool = False) -> Mapping[str, Any] | None:
    """The object `data[key]`; None when it is absent or null, unless it is `needed`."""
    value = data[key] if needed else data.get(key)
    if value is None and not needed:
        return None
    if not isinstance(value, Mapping):
        raise _wrong(data, key, value, "an object")
    return value


def parts(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]] | None:
    """The list of objects `data[key]`; None when it is absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise _wrong(data, key, value, "a list of objects")
    return value


def texts(data: Mapping[str, Any], key: str) -> list[str]:
    """The list of text `data[key]`; empty when it is absent or null."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _wrong(data, key, value, "a list of text")
    return list(value)


class Scalar(Generic[T]):
    """The reader of one kind of scalar field (`text`, `whole_number`, `number`, `truth`):
    `read(data, key)` is `data[key]`, which must be there; `read(data, key, default)` is `default`
    when the key is absent (a server older than the field); `read(data, key, null=True)` is None
    when it is absent or null, for a field orch sends as null. A value of another kind, or null
    where orch never sends it, raises `_wrong`: `bool("false")` would be True, `"x"` an exit code."""

    def __init__(self, wanted: str, kinds: type | tuple[type, ...]) -> None:
        self.wanted, self.kinds = wanted, kinds

    @overload
    def __call__(self, data: Mapping[str, Any], key: str, default: T = ...) -> T: ...
    @overload
    def __call__(self, data: Mapping[str, Any], key: str, default: None) -> T | None: ...
    @overload
    def __call__(self, data: Mapping[str, Any], key: str, *, null: Literal[True]) -> T | None: ...

    def __call__(
        self, data: Mapping[str, Any], key: str, default: Any = _NEEDED, *, null: bool = False
    ) -> Any:
        if key not in data and (null or default is not _NEEDED):
            return None if null else default
        value = data[key]  # a Reply that lacks it raises not_understood, naming the key
        if value is None and null:
            return None
        # True is an int to Python, never a number to orch (nor 1 true or false)
        if not isinstance(value, self.kinds) or (isinstance(value, bool) and self.kinds is not bool):
            raise _wrong(data, key, value, self.wanted)
        return value


text: Scalar[str] = Scalar("text", str)
whole_number: Scalar[int] = Scalar("a whole number", int)
number: Scalar[float] = Scalar("a number", (int, float))
truth: Scalar[bool] = Scalar("true or false", bool)


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
        return cls(id=text(data, "id", null=True), name=text(data, "name", null=True))

    @classmethod
    def _of(cls, data: Mapping[str, Any], key: str = "environment") -> EnvironmentRef:
        """The reference in the field `key` of `data` (a run's or a sandbox's)."""
        return cls._from_api(part(data, key))


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
        built = part(data, "dockerfile_environment")
        return cls(
            id=text(data, "id"),
            version=whole_number(data, "version"),
            entrypoint=text(data, "entrypoint"),
            language=text(data, "language"),
            command=texts(data, "command"),
            bundle_sha256=text(data, "bundle_sha256", ""),
            bundle_size=whole_number(data, "bundle_size", 0),
            pinned_environment=text(data, "pinned_environment", null=True),
            dockerfile_environment=EnvironmentRef._from_api(built) if built else None,
            dependency_files=texts(data, "dependency_files"),
            created_at=when(data, "created_at"),
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
        versions = parts(data, "versions")
        latest = part(data, "latest", needed=True)
        assert latest is not None  # needed: never None
        return cls(
            id=text(data, "id"),
            name=text(data, "name"),
            latest_version=whole_number(data, "latest_version"),
            latest=AgentVersion._from_api(latest),
            created_at=when(data, "created_at"),
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
            id=text(data, "id"),
            name=text(data, "name"),
            kind=text(data, "kind"),
            status=text(data, "status"),
            default=truth(data, "default", False),
            description=text(data, "description", ""),
            image=text(data, "image", null=True),
            error=text(data, "error", null=True),
            created_at=when(data, "created_at"),
            dockerfile=text(data, "dockerfile", null=True),
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
            name=text(data, "name"),
            created_at=when(data, "created_at"),
            updated_at=when(data, "updated_at"),
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
