"""What services may hold at once (docs/services.md, "Resources"): the sum, over the services
that run or are being deployed to run, of their replicas times their memory limit (within the
`service_memory` setting, and a workspace's within `max_service_memory`) and of their replicas
times their process limit (within `service_pids`). Services live until they are stopped, so a
version that does not fit is refused when it is deployed, or when a stopped service is started
again, rather than queued: nothing of it is stored or started.

A service holds what the version it is being deployed to asks for while a deployment is under
way (its `replicas:` and `resources:`), else, while it should run, what its serving version asks
for; a stopped service holds nothing. Like `run_memory` and `run_pids` for sandboxes, these keep
services at their limits from taking the machine's memory from the server, the runs and each
other, and their processes (every service runs as the host's uid 1000, as sandboxes do) from
the kernel's per-user count. A rollout's one extra container (the next replica started before
the old one stops) is not counted: it lives for a replica's start."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch.bundle import Manifest
from orch.errors import InvalidInput, LimitReached
from orch.models import DeploymentStatus
from orch.services.platform import Platform
from orch.sizes import format_size
from orch.store.schema import ServiceDeploymentRow, ServiceRow

_OPEN = [d.value for d in DeploymentStatus if not d.final]


@dataclass(frozen=True)
class Held:
    """What a set of services holds: the sum of replicas times each limit."""

    memory: int = 0
    pids: int = 0

    def __add__(self, other: Held) -> Held:
        return Held(self.memory + other.memory, self.pids + other.pids)

    def most(self, other: Held) -> Held:
        """What holds both, one at a time or side by side in turn: the larger of each."""
        return Held(max(self.memory, other.memory), max(self.pids, other.pids))


def of(manifest: Manifest) -> Held:
    """What a version with this manifest holds while it runs."""
    n = manifest.replicas
    return Held(n * manifest.resources.memory_bytes, n * manifest.resources.pids)


def _held(s: Session) -> dict[str, tuple[str, Held]]:
    """What each service holds (service id -> its workspace's id, what it holds): while a
    deployment of it is under way, the larger of its serving version's (while it should run)
    and the new one's, since the serving version runs on until the new one serves, and for
    good if the new one fails (found by a tester: a smaller redeploy that failed let a service
    go back over the budgets its new version had been counted in)."""
    deploying = {
        service_id: manifest
        for service_id, manifest in s.execute(
            select(ServiceDeploymentRow.service_id, ServiceDeploymentRow.manifest).where(
                ServiceDeploymentRow.status.in_(_OPEN), ServiceDeploymentRow.stop_requested.is_(False)
            )
        )
    }
    rows = s.execute(
        select(
            ServiceRow.id,
            ServiceRow.workspace_id,
            ServiceRow.desired,
            ServiceRow.version,
            ServiceRow.manifest,
        )
    )
    held: dict[str, tuple[str, Held]] = {}
    for service_id, ws_id, desired, version, serving in rows:
        running = of(Manifest.model_validate_json(serving)) if desired == "running" and version else Held()
        new = deploying.get(service_id)
        held[service_id] = (ws_id, running.most(of(Manifest.model_validate_json(new))) if new else running)
    return held


def check(
    platform: Platform,
    s: Session,
    ws_id: str,
    service_id: str | None,
    name: str,
    manifest: Manifest,
    beside: Manifest | None = None,
    restart: bool = False,
) -> None:
    """Refuse a version of service `name` (`service_id` once it exists) that would take the
    services of the server or of its workspace over their budgets: 429, saying what holds what,
    or 400 when it asks alone for more than a budget; call it under the services' lock, in the
    session that then stores the change. `beside`: a version that runs on until this one
    serves (the serving one of a redeploy), held with it as `_held` counts; `restart`: a stopped
    service started again, whose fix is not to deploy again. A change that makes
    the service hold no more than it does (a smaller redeploy) is never refused for a sum, so a
    service over a budget the operator lowered can still be made smaller."""
    need = of(manifest)
    after = need.most(of(beside)) if beside is not None else need
    services = _held(s)
    now = services.pop(service_id, (ws_id, Held()))[1] if service_id else Held()
    total, mine = Held(), Held()
    for workspace, holds in services.values():
        total += holds
        mine += holds if workspace == ws_id else Held()
    n = manifest.replicas
    replicas = f"{n} replica{'s' if n != 1 else ''}"
    memory = (
        f"{format_size(need.memory)} ({replicas} × memory: {format_size(manifest.resources.memory_bytes)})"
    )
    pids = f"{need.pids:,} ({replicas} × pids: {manifest.resources.pids:,})"
    fewer = "ask for fewer replicas: or less memory: in orch.yaml"
    stop = "Stop or delete a service you no longer need (`orch service stop NAME`)"
    # A restart runs what was deployed: less is asked for by a deploy.
    free = (
        f"{stop}, then restart it again; or deploy it anew: {fewer}"
        if restart
        else f"{stop}, or {fewer}, then deploy again"
    )
    server = int(platform.config.service_memory)
    share = int(platform.config.max_service_memory)
    processes = int(platform.config.service_pids)
    for asked, budget, what, setting in (
        (need.memory, server, "all services on this server may have", "service_memory"),
        (need.memory, share, "a workspace's services may hold", "max_service_memory"),
    ):
        if asked > budget:
            raise InvalidInput(
                f"{name} asks for {memory} of memory, more than the {format_size(budget)} that {what} "
                f"at once ({setting}).",
                f"Ask for at most {format_size(min(server, share))} in all: {fewer}.",
            )
    if need.pids > processes:
        raise InvalidInput(
            f"{name} asks for {pids} processes, more than the {processes:,} that all services on this "
            "server may have at once (service_pids).",
            f"Ask for at most {processes:,} in all: fewer replicas: or a lower pids: in orch.yaml.",
        )
    memory_over = after.memory > now.memory and total.memory + after.memory > server
    if memory_over or (after.pids > now.pids and total.pids + after.pids > processes):
        held, of_all, setting, asks, less = (
            (format_size(total.memory), f"{format_size(server)} of memory", "service_memory", memory, "")
            if memory_over
            else (f"{total.pids:,}", f"{processes:,} processes", "service_pids", pids, "pids")
        )
        raise LimitReached(
            f"The services on this server hold {held} of the {of_all} they may have at once "
            f"({setting}), and {name} asks for {asks}.",
            f"{free.replace('less memory:', 'a lower pids:') if less else free}; or the operator "
            f"raises ORCH_{setting.upper()}.",
        )
    if after.memory > now.memory and mine.memory + after.memory > share:
        raise LimitReached(
            f"This workspace's services hold {format_size(mine.memory)} of memory, and {name} asks for "
            f"{memory}: more than the {format_size(share)} a workspace's services may hold at once "
            "(max_service_memory).",
            f"{free}.",
        )
