"""Services' states and what the API returns about them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class ServiceState(StrEnum):
    DEPLOYING = "deploying"  # its first version is being built and started; nothing serves yet
    STARTING = "starting"  # a container was (re)started and should be running in a moment
    RUNNING = "running"  # its container runs and is reachable through the proxy
    RESTARTING = "restarting"  # it exited; waiting out its backoff before the next start
    CRASH_LOOPING = "crash-looping"  # it exited quickly several times in a row; still retried, slowly
    STOPPED = "stopped"  # `orch service stop`: no container, until `orch service restart`
    FAILED = "failed"  # its first deployment failed: there is nothing to run


class DeploymentStatus(StrEnum):
    QUEUED = "queued"  # stored, waiting for the deploy worker
    BUILDING = "building"  # the image (bundle + dependencies) is being built
    STARTING = "starting"  # the new version's container runs; waiting for it to answer on PORT
    READY = "ready"  # it answered and now serves; the previous version was stopped
    FAILED = "failed"  # no switch happened; the previous version (if any) still serves

    @property
    def final(self) -> bool:
        return self in (DeploymentStatus.READY, DeploymentStatus.FAILED)


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
    notes: list[str] = []


class ServiceView(BaseModel):
    id: str
    name: str
    workspace: str
    state: str
    desired: str
    url: str  # the path on the server that proxies to the service
    version: int
    latest_version: int
    image: str | None
    command: list[str]
    run_command: str | None
    container: str | None
    restarts: int
    started_at: datetime | None
    uptime: float | None  # seconds since its container started, while it runs
    last_exit: int | None
    last_output: str
    error: str | None
    created_at: datetime
    deployment: DeploymentView | None = None  # the latest one


class ServiceLogs(BaseModel):
    text: str
    offset: int
    state: str
