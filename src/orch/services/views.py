"""What the API returns: the JSON contract of SPEC §3, as pydantic models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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
    log_tail: str
    image: str | None
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
    cache: str | None
    cache_reason: str | None
    build_id: str | None
    error: str | None
    created_at: datetime
    build: BuildView | None = None
    dockerfile: str | None = None


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
