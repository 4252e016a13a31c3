"""/v1/environments and the workspace's default environment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Response
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from orch.dockerfile.bounded import MAX_TEXT
from orch.server.api.deps import NAME_FIELD, Body, PlatformDep, Reference, WorkspaceDep, api_router, name_rule
from orch.services import agents
from orch.services import environments as envs
from orch.services.views import (
    BuildLogChunk,
    CreatedEnvironment,
    DefaultView,
    EnvironmentView,
    FindingView,
    ValidationView,
)

router = api_router("environments")

# Texts up to 4x the validator's limit reach it, so that one a little too long gets the same
# finding here as from `orch env validate`; longer ones are refused as a request (as the CLI
# refuses a file over 1 MiB), in a sentence that names the validator's limit, the one that holds.
MAX_DOCKERFILE = 4 * MAX_TEXT


def _within_bound(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_DOCKERFILE:
        # Said as the API says a text too long ("dockerfile is longer than 262,144 characters"),
        # with the limit a client must keep to: not MAX_DOCKERFILE, which it would trim to, only
        # to be refused again by the validator.
        raise PydanticCustomError(
            "string_too_long",
            "String should have at most {max_length} characters",
            {"max_length": f"{MAX_TEXT:,}"},
        )
    return value


DockerfileField = Annotated[str, BeforeValidator(_within_bound)]


class CreateEnvironment(Body):
    name: Annotated[str, name_rule("Environment name")] = Field(
        max_length=NAME_FIELD, description="Lower-case name, unique in the workspace."
    )
    dockerfile: DockerfileField = Field(
        max_length=MAX_DOCKERFILE,
        description=f"The Dockerfile's text: at most {MAX_TEXT:,} characters (a longer one gets a finding).",
    )
    no_cache: bool = Field(False, description="Build even when a cached image matches.")


class DockerfileText(Body):
    dockerfile: DockerfileField = Field(
        max_length=MAX_DOCKERFILE,
        description=f"The Dockerfile's text: at most {MAX_TEXT:,} characters (a longer one gets a finding).",
    )


class BuildRequestBody(Body):
    no_cache: bool = False


class SetDefault(Body):
    environment: Reference = Field(max_length=200, description="An environment id or name.")


@router.get("/environments", response_model=list[EnvironmentView])
def list_environments(platform: PlatformDep, ws: WorkspaceDep) -> list[EnvironmentView]:
    """Base, predefined and this workspace's custom environments."""
    return envs.list_environments(platform, ws)


@router.post("/environments", response_model=CreatedEnvironment, status_code=201)
def create_environment(
    body: CreateEnvironment, platform: PlatformDep, ws: WorkspaceDep, response: Response
) -> CreatedEnvironment:
    """Validate a Dockerfile, then reuse a cached image at once or queue a build."""
    created = envs.create(platform, ws, body.name, body.dockerfile, body.no_cache)
    response.headers["Location"] = f"/v1/environments/{created.id}"
    return created


@router.post("/environments/validate", response_model=ValidationView)
def validate_dockerfile(body: DockerfileText, ws: WorkspaceDep) -> ValidationView:
    """Findings for a Dockerfile, without building it."""
    v = envs.validate(body.dockerfile)
    return ValidationView(ok=v.ok, findings=[FindingView.model_validate(f.to_dict()) for f in v.findings])


@router.get("/environments/{ref}", response_model=EnvironmentView)
def get_environment(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> EnvironmentView:
    """One environment, by id or name, with its current build."""
    return envs.show(platform, ws, ref)


@router.get("/environments/{ref}/logs", response_model=BuildLogChunk)
def get_build_log(
    ref: str,
    platform: PlatformDep,
    ws: WorkspaceDep,
    offset: int = Query(0, ge=0, description="Byte offset in the build's log."),
    build: str | None = Query(
        None, max_length=200, description="A build id of this environment (default: its latest build)."
    ),
) -> BuildLogChunk:
    """A build's whole log, from byte `offset`, up to 1 MiB at a time: ask again from the returned
    offset while `more` (and, to follow a build, until its status is ready or failed)."""
    return envs.read_log(platform, ws, ref, offset, build)


@router.post("/environments/{ref}/build", response_model=EnvironmentView, status_code=202)
def build_environment(
    ref: str, platform: PlatformDep, ws: WorkspaceDep, body: BuildRequestBody | None = None
) -> EnvironmentView:
    """Build now: a predefined environment ahead of first use, or a custom one again."""
    return envs.build(platform, ws, ref, no_cache=bool(body and body.no_cache))


@router.delete("/environments/{ref}", response_model=EnvironmentView)
def delete_environment(ref: str, platform: PlatformDep, ws: WorkspaceDep) -> EnvironmentView:
    """Delete a custom environment that nothing uses."""
    return envs.delete(platform, ws, ref)


@router.get("/workspace/default-environment", response_model=DefaultView)
def get_default(platform: PlatformDep, ws: WorkspaceDep) -> DefaultView:
    return DefaultView(default=envs.get_default(platform, ws))


@router.put("/workspace/default-environment", response_model=DefaultView)
def set_default(body: SetDefault, platform: PlatformDep, ws: WorkspaceDep) -> DefaultView:
    """Make an environment the workspace default (used on the next run of agents that have no
    Dockerfile and no pinned environment)."""
    default = envs.set_default(platform, ws, body.environment)
    return DefaultView(default=default, affected_agents=agents.count_without_own_environment(platform, ws))


@router.delete("/workspace/default-environment", response_model=DefaultView)
def clear_default(platform: PlatformDep, ws: WorkspaceDep) -> DefaultView:
    """Clear the workspace default; returns the environment that was the default."""
    return DefaultView(default=envs.clear_default(platform, ws))
