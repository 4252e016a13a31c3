"""The body of every error the API answers, as its OpenAPI schema declares it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """What every 4xx and 5xx answer carries; some errors add fields (a Dockerfile's findings)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable code for scripts, such as `not_found` or `invalid_dockerfile`.")
    message: str = Field(description="What went wrong, as a sentence.")
    fix: str = Field(description="What to do about it, as a sentence.")


# Declared for every operation; "4XX" also stands in for FastAPI's own 422 schema, which
# describes a body (`detail`) that this API never sends.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "The request can't be served as sent; `fix` says why."},
    "5XX": {"model": ErrorBody, "description": "The server failed; its log says more."},
}
