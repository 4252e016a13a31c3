"""/v1/secrets: the workspace's secrets. Values go in and never come out: every answer holds names
and times only; a run gets the values its agent asks for in its sandbox (docs/secrets.md)."""

from __future__ import annotations

from fastapi import Response
from pydantic import Field

from orch.server.api.deps import Body, PlatformDep, WorkspaceDep, api_router
from orch.services import secrets
from orch.services.views import SecretView

router = api_router("secrets")


class SetSecret(Body):
    value: str = Field(description="The value: 1 byte to 64 KiB of UTF-8 text, without NUL characters.")


@router.put("/secrets/{name}", response_model=SecretView)
def set_secret(name: str, body: SetSecret, platform: PlatformDep, ws: WorkspaceDep) -> SecretView:
    """Create the secret NAME (an environment variable's name, such as OPENAI_API_KEY) or replace
    its value."""
    return secrets.set_secret(platform, ws, name, body.value)


@router.get("/secrets", response_model=list[SecretView])
def list_secrets(platform: PlatformDep, ws: WorkspaceDep) -> list[SecretView]:
    """The workspace's secrets: names and times, never values."""
    return secrets.list_secrets(platform, ws)


@router.delete("/secrets/{name}", status_code=204, response_class=Response)
def delete_secret(name: str, platform: PlatformDep, ws: WorkspaceDep) -> Response:
    """Delete a secret: runs that need it fail from then on, naming it."""
    secrets.delete_secret(platform, ws, name)
    return Response(status_code=204)
