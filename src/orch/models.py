"""The states of orch's things, the legal moves between them, and names and ids: shared by
every layer."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from orch.errors import IllegalTransition, InvalidInput


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


# The only legal moves of a build. Every change of a build's status goes through `advance`, which
# refuses any other (the store's column itself would take any text).
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

# The only legal moves of a run; `advance` refuses any other, as for builds.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.STARTING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.STARTING: frozenset({RunStatus.RUNNING, RunStatus.QUEUED, *_FINAL_RUN}),
    RunStatus.RUNNING: _FINAL_RUN,
    **{s: frozenset() for s in _FINAL_RUN},
}


class SandboxStatus(StrEnum):
    """A sandbox on demand (held open for a workspace, driven step by step)."""

    STARTING = "starting"  # stored; its root is being prepared and its init started
    RUNNING = "running"  # held open: commands and files go in
    REMOVED = "removed"  # on request, idle, at its lifetime's end, or by a restart; `reason` says which
    FAILED = "failed"  # could not start, or ended by itself; `reason` says why

    @property
    def final(self) -> bool:
        return self in (SandboxStatus.REMOVED, SandboxStatus.FAILED)


# The only legal moves of a sandbox; `advance` refuses any other, as for builds and runs.
SANDBOX_TRANSITIONS: dict[SandboxStatus, frozenset[SandboxStatus]] = {
    SandboxStatus.STARTING: frozenset({SandboxStatus.RUNNING, SandboxStatus.FAILED, SandboxStatus.REMOVED}),
    SandboxStatus.RUNNING: frozenset({SandboxStatus.REMOVED, SandboxStatus.FAILED}),
    SandboxStatus.REMOVED: frozenset(),
    SandboxStatus.FAILED: frozenset(),
}


S = TypeVar("S", BuildStatus, RunStatus, SandboxStatus)
_TABLES: dict[type[StrEnum], tuple[str, Mapping[Any, frozenset[Any]]]] = {
    BuildStatus: ("build", BUILD_TRANSITIONS),
    RunStatus: ("run", RUN_TRANSITIONS),
    SandboxStatus: ("sandbox", SANDBOX_TRANSITIONS),
}


def transitions(kind: type[S]) -> Mapping[S, frozenset[S]]:
    """The table of legal moves of a status type."""
    table: Mapping[Any, frozenset[Any]] = _TABLES[kind][1]
    return table


def advance(current: S | str, new: S) -> S:
    """`new`, when a build, run or sandbox in status `current` (a member or a row's value) may
    move to it; else IllegalTransition. Every status change of one goes through here."""
    kind = type(new)
    old = kind(current)
    if new not in transitions(kind)[old]:
        what = _TABLES[kind][0]
        raise IllegalTransition(
            f"A {what} can't go from {old} to {new}.",
            "This is a bug in orch; the server's log has the details worth reporting.",
        )
    return new


def sources(new: S) -> frozenset[S]:
    """Every status from which `new` is a legal move (the WHERE of a conditional UPDATE)."""
    return frozenset(old for old, moves in transitions(type(new)).items() if new in moves)


class ServiceState(StrEnum):
    DEPLOYING = "deploying"  # its first version is being built and started; nothing serves yet
    STARTING = "starting"  # a container was (re)started and should be running in a moment
    RUNNING = "running"  # its container runs and is reachable through the proxy
    RESTARTING = "restarting"  # it exited; waiting out its backoff before the next start
    CRASH_LOOPING = "crash-looping"  # it exited quickly several times in a row; still retried, slowly
    STOPPED = "stopped"  # `orch service stop`: no container, until `orch service restart`
    FAILED = "failed"  # its first deployment failed: there is nothing to run


class DeploymentStatus(StrEnum):
    """A deployment's progress. No table of moves: the deploy worker is its one writer."""

    QUEUED = "queued"  # stored, waiting for the deploy worker
    BUILDING = "building"  # the image (bundle + dependencies) is being built
    STARTING = "starting"  # the new version's container runs; waiting for it to answer on PORT
    READY = "ready"  # it answered and now serves; the previous version was stopped
    FAILED = "failed"  # no switch happened; the previous version (if any) still serves

    @property
    def final(self) -> bool:
        return self in (DeploymentStatus.READY, DeploymentStatus.FAILED)


class EnvironmentRule(StrEnum):
    """Why a run got its environment, in the order the rules are tried (docs/agents.md, "Which
    environment a run gets")."""

    DOCKERFILE = "dockerfile"
    PINNED = "pinned"
    WORKSPACE_DEFAULT = "workspace-default"
    BASE = "base"


class EnvStatus(StrEnum):
    """What an environment's list shows: derived from its current build (not stored; no
    transitions of its own), or from its image for base environments."""

    NOT_BUILT = "not-built"  # predefined, never built yet: built on first use
    QUEUED = "queued"
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


# The scope of the base and predefined environments, which every workspace sees (a custom
# environment's scope is its workspace's id).
SHARED = "*"

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def shown_name(name: str) -> str:
    """A name or reference as a message shows it: whole up to 70 characters, else its start and
    its length (a 5000-character reference would fill the terminal)."""
    return name if len(name or "") <= 70 else f"{name[:60]}… ({len(name)} characters)"


def check_name(name: str, what: str = "Environment name", id_prefix: str = "") -> str:
    """Return `name` if it is a valid resource name, else raise InvalidInput. With `id_prefix`
    (the kind's ids start so, e.g. "env_"), a new name must not start like an id: a reference
    that does is looked up as an id, so the name could never be reached, and an id would win."""
    if not _NAME.match(name or ""):
        raise InvalidInput(
            f"{what} {shown_name(name)!r} is not valid.",
            "Use 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending with a "
            "letter or digit.",
        )
    if id_prefix and name.startswith(id_prefix):
        raise InvalidInput(
            f"{what} {name!r} starts like an id ({id_prefix}…), so it could not be told from one.",
            f"Choose a name that does not start with {id_prefix!r}.",
        )
    return name


def new_id(prefix: str) -> str:
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def id_pattern(prefix: str) -> re.Pattern[str]:
    """The ids `new_id(prefix)` makes, and no other."""
    return re.compile(rf"^{prefix}_[{_ID_ALPHABET}]{{10}}$")


def chosen_id(value: str, pattern: re.Pattern[str], what: str) -> str:
    """An id a caller chose for a new `what` (a run, a sandbox: so that a create cut short can be
    undone by it), of `pattern` (`id_pattern`) as the server makes them; else InvalidInput."""
    if not pattern.match(value):
        prefix = pattern.pattern[1:].partition("_")[0]
        raise InvalidInput(
            f"The id {shown_name(value)!r} is not a {what} id as the server makes them.",
            f"Use {prefix}_ and 10 characters of 0-9 and a-z without i, l, o and u (or leave it out).",
        )
    return value
