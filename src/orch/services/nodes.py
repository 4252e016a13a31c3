"""The nodes of a cluster, as the store knows them (docs/scale.md): a node registers when it joins,
says every second that it is alive (its heartbeat: what it runs now and which images it holds),
claims runs from the store's queue preferring those whose image it holds, and is declared lost
when Ray says its machine is gone or its heartbeat stops. A lost node's runs never stay stuck:
those it had not started go back to the queue for another node, those it had started fail with
the reason `node lost`."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from orch import metrics
from orch.errors import OrchError
from orch.models import BuildStatus, DeploymentStatus, RunStatus, SandboxStatus, ServiceState, advance
from orch.services.platform import Platform
from orch.services.run_environment import choose_environment
from orch.services.run_output import note
from orch.services.takedown import renew_replica
from orch.services.views import NodeView
from orch.store import queue
from orch.store.schema import (
    AgentVersionRow,
    BuildRow,
    NodeRow,
    RunRow,
    SandboxRow,
    ServiceDeploymentRow,
    ServiceLeaseRow,
    ServiceReplicaRow,
    ServiceRow,
    WorkspaceRow,
    utcnow,
)

log = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between a node's heartbeats
LOST_AFTER = 10.0  # seconds without a heartbeat after which a node is lost, whatever Ray says
# How long a queued run waits for a node that holds its image, when one with free capacity
# exists, before a node without the image takes it (and pulls the image).
PREFER_FOR = 2.0
# How long a queued run waits for a node with more room than the one looking at it: runs spread
# over the nodes by their free capacity.
SPREAD_FOR = 0.5
CANDIDATES = 8  # queued runs a node looks at per claim

UP, STOPPED, LOST = "up", "stopped", "lost"
NODE_LOST = "node lost"
NODE_STOPPED = "node stopped"
# What a run's log says happened to its node (`_settle`), after "The node NAME ".
WAS_LOST, WAS_STOPPED = "was lost", "stopped"
RESTARTED = "restarted (its agent's process ended without a stop)"


@dataclass(frozen=True)
class Joining:
    """What a node says of itself when it joins."""

    id: str
    address: str
    cpus: int
    memory: int  # bytes
    slots: int  # sandboxes at once (its run_workers)
    ray_node: str | None = None
    proxy: str | None = None  # HOST:PORT of its services' proxy (server/node_proxy.py)
    memory_budget: int | None = None  # bytes its sandboxes may hold at once (its run_memory)


def register(platform: Platform, me: Joining) -> None:
    """Record the node as up, replacing what an earlier life of it left. That life was stopped
    (`leave`) or declared lost, and its work settled then; or its agent's process ended without
    either (killed, and Ray started it again within LOST_AFTER): its work is settled now, as a
    lost node's, with the reason `node lost` and a log line saying the node restarted.

    The images an earlier life said it held (its row's `images`) that the engine still has are
    held again: the cluster goes on preferring this node for runs of them, and it lets go of
    those no environment runs any more as it would of its own (images.release_held)."""
    now = utcnow()
    held_before: set[str] = set()
    with platform.store.session() as s:
        earlier = select(NodeRow.id).where(NodeRow.instance == platform.instance, NodeRow.state == UP)
        for gone in s.scalars(earlier).all():
            _settle(platform, s, gone, platform.instance, NODE_LOST, RESTARTED)
        # Another node's old row may hold this instance (a node renamed over the same home).
        for old in s.scalars(
            select(NodeRow).where(NodeRow.instance == platform.instance, NodeRow.id != me.id)
        ):
            held_before.update(json.loads(old.images or "[]"))
            s.delete(old)
        s.flush()
        row = s.get(NodeRow, me.id) or NodeRow(id=me.id)
        if row.instance == platform.instance:  # this home's: a name reused elsewhere held others
            held_before.update(json.loads(row.images or "[]"))
        row.instance, row.address, row.ray_node, row.state = platform.instance, me.address, me.ray_node, UP
        row.proxy = me.proxy
        row.cpus, row.memory, row.slots, row.running = me.cpus, me.memory, me.slots, 0
        row.memory_budget = me.memory_budget
        row.images, row.started_at, row.seen_at = "[]", now, now
        s.add(row)
    if held_before:
        _hold_again(platform, held_before)


def _hold_again(platform: Platform, tags: set[str]) -> None:
    """Count as held the `tags` an earlier life held that the engine still has (one listing of
    its images); the next heartbeat says so. A listing that fails holds none: each is found
    again at its next use."""
    try:
        here = {tag for image in platform.engine.images({}) for tag in image.tags}
    except OrchError as e:
        log.warning("listing the images an earlier life of this node held: %s", e)
        return
    platform.present_base_tags.update(tags & here)


def heartbeat(platform: Platform, node_id: str, running: int, images: Collection[str]) -> bool:
    """Say the node is alive; False when it was declared lost meanwhile (it must then stop: its
    runs went to other nodes or failed)."""
    with platform.store.session() as s:
        result = s.execute(
            update(NodeRow)
            .where(NodeRow.id == node_id, NodeRow.instance == platform.instance, NodeRow.state == UP)
            .values(seen_at=utcnow(), running=running, images=json.dumps(sorted(images)))
        )
        return bool(getattr(result, "rowcount", 0))


def stopping(platform: Platform, node_id: str) -> None:
    """A node about to stop cleanly (`orch node stop`), before its workers stop: its started
    runs fail now with the reason `node stopped`. Its workers then kill their sandboxes, and
    a run ended already keeps its reason: else each would record the kill as its agent's own
    exit (137, SIGKILL). `leave` settles the rest once the workers stopped."""
    with platform.store.session() as s:
        _fail_started(platform, s, node_id, platform.instance, NODE_STOPPED, WAS_STOPPED)
    platform.notify_runs()


def leave(platform: Platform, node_id: str) -> int:
    """A node that stops cleanly (`orch node stop`; its workers stopped and its sandboxes went
    first): marked stopped, and what it had in flight settled now, since it may never start
    again to settle it itself: as for a lost node, its runs that had not started their agent are
    queued again and its started ones fail (`node stopped`; `stopping` failed those it knew of
    before its workers stopped), its builds and its deployments under way are queued again, its
    open sandboxes fail, its services' replicas wait for another node. Return how many other
    nodes are up (none: its services, and the runs and builds queued, wait for one)."""
    with platform.store.session() as s:
        stopped = s.execute(
            update(NodeRow)
            .where(NodeRow.id == node_id, NodeRow.instance == platform.instance, NodeRow.state == UP)
            .values(state=STOPPED, running=0, seen_at=utcnow())
        )
        if getattr(stopped, "rowcount", 0):
            _settle(platform, s, node_id, platform.instance, NODE_STOPPED, WAS_STOPPED)
            _let_go_of_services(s, platform.instance)
        others = s.scalar(select(func.count()).select_from(NodeRow).where(NodeRow.state == UP))
    platform.wake_deploys.set()
    platform.wake_runs.set()
    platform.wake_builds.set()
    platform.notify_runs()
    return int(others or 0)


def _view(n: NodeRow) -> NodeView:
    return NodeView(
        id=n.id,
        address=n.address,
        state=n.state,
        capacity={"cpus": n.cpus, "memory": n.memory, "slots": n.slots},
        running=n.running if n.state == UP else 0,
        proxy=n.proxy,
        started_at=n.started_at,
        seen_at=n.seen_at,
    )


def list_nodes(platform: Platform) -> list[NodeView]:
    with platform.store.session() as s:
        return [_view(n) for n in s.scalars(select(NodeRow).order_by(NodeRow.id))]


def none_up(s: Session) -> bool:
    """Whether no node of the cluster is up (a silent one not yet declared lost counts as up)."""
    return s.scalar(select(NodeRow.id).where(NodeRow.state == UP).limit(1)) is None


NO_NODE = (
    "→ waiting for a node: no node of the cluster is up; the run starts when one is "
    "(`orch node start --cluster HEAD:PORT` on a machine of the cluster; `orch node list`)."
)


def up_elsewhere(platform: Platform) -> NodeView | None:
    """The node that is up under this node's name (`platform.node`) with another platform: one
    of another ORCH_HOME or machine, whose agent `orch node start` would otherwise replace and
    whose open sandboxes it would strand. Silent nodes are declared lost first, as any watcher
    would within LOST_AFTER: their name is free."""
    settle_lost(platform)
    with platform.store.session() as s:
        row = s.get(NodeRow, platform.node)
        if row is None or row.state != UP or row.instance == platform.instance:
            return None
        return _view(row)


def settle_lost(platform: Platform, alive_ray_nodes: Collection[str] | None = None) -> list[str]:
    """Declare lost every node that is up but silent for LOST_AFTER, or whose Ray node is not
    among `alive_ray_nodes` (None: Ray not asked), and settle its work; returns their ids. Any
    number of servers and nodes may call this at once: each node is declared lost once."""
    silent_since = utcnow() - timedelta(seconds=LOST_AFTER)
    with platform.store.session() as s:
        up = s.execute(
            select(NodeRow.id, NodeRow.instance, NodeRow.ray_node, NodeRow.seen_at).where(NodeRow.state == UP)
        )
        gone = [
            (node_id, instance)
            for node_id, instance, ray_node, seen_at in up
            if seen_at < silent_since
            or (alive_ray_nodes is not None and ray_node is not None and ray_node not in alive_ray_nodes)
        ]
    lost = []
    for node_id, instance in gone:
        with platform.store.session() as s:
            taken = s.execute(
                update(NodeRow)
                .where(NodeRow.id == node_id, NodeRow.instance == instance, NodeRow.state == UP)
                .values(state=LOST, running=0)
            )
            if not getattr(taken, "rowcount", 0):
                continue  # another server or node declared it lost first
            _settle(platform, s, node_id, instance, NODE_LOST, WAS_LOST)
        log.warning("node %s is lost: its runs were queued again or failed", node_id)
        lost.append(node_id)
    if lost:
        platform.wake_deploys.set()
        platform.wake_runs.set()
        platform.wake_builds.set()
        platform.notify_runs()
    return lost


def _fail_started(
    platform: Platform, s: Session, node_id: str, instance: str, reason: str, what: str
) -> None:
    """Fail the runs node `node_id` (platform `instance`) started the agent of (they may have
    had effects: they are not run again), with `reason`; their log says what the node did."""
    for run in s.scalars(
        select(RunRow).where(RunRow.claimed_by == instance, RunRow.status == RunStatus.RUNNING.value)
    ):
        run.status, run.finished_at = advance(run.status, RunStatus.FAILED), utcnow()
        run.reason = reason
        metrics.of(platform).run_finished(RunStatus.FAILED)
        note(s, run.id, f"The node {node_id} {what} while this run was running; it was marked failed.")


def _settle(platform: Platform, s: Session, node_id: str, instance: str, reason: str, what: str) -> None:
    """Settle what node `node_id` (platform `instance`) had in flight, which it will not end:
    it was lost (`reason` NODE_LOST) or stopped (NODE_STOPPED); `what` it did, for runs' logs."""
    for run in s.scalars(
        select(RunRow).where(RunRow.claimed_by == instance, RunRow.status == RunStatus.STARTING.value)
    ):
        # Its agent had not started: nothing it did can have had effects yet.
        run.status, run.claimed_by, run.node = advance(run.status, RunStatus.QUEUED), None, None
        note(s, run.id, f"The node {node_id} {what} before this run started; it was queued again.")
    _fail_started(platform, s, node_id, instance, reason, what)
    for build in s.scalars(
        select(BuildRow).where(BuildRow.claimed_by == instance, BuildRow.status == BuildStatus.BUILDING.value)
    ):
        # A build has no effects outside its image: another node builds it again.
        build.status, build.claimed_by, build.node = advance(build.status, BuildStatus.QUEUED), None, None
    # A deployment half-way is queued again (as a restarted server does, workers/deploys.py).
    s.execute(
        update(ServiceDeploymentRow)
        .where(
            ServiceDeploymentRow.claimed_by == instance,
            ServiceDeploymentRow.status.in_(
                [DeploymentStatus.BUILDING.value, DeploymentStatus.STARTING.value]
            ),
        )
        .values(status=DeploymentStatus.QUEUED.value, container=None)
    )
    for sandbox in s.scalars(
        select(SandboxRow).where(
            SandboxRow.owner == instance,
            SandboxRow.status.in_([SandboxStatus.STARTING.value, SandboxStatus.RUNNING.value]),
        )
    ):
        # Held in memory on that machine: gone with it, and its node sweeps what is left.
        sandbox.status, sandbox.reason = advance(sandbox.status, SandboxStatus.FAILED).value, reason
        sandbox.removed_at = utcnow()


def _let_go_of_services(s: Session, instance: str) -> None:
    """The replicas whose containers are node `instance`'s, which it removed as it stopped, run
    no more: each lets go of its container, as `renew_replica` does, so the next holder of the
    service starts one at once, and the service is `starting` until then, not `running` with no
    container behind it (with no node up, until one is). Not a lost node's: its containers may
    still run, and its agent, started again, adopts them."""

    theirs = f"orch-{instance}-"  # their containers' names' beginning (Platform.container_prefix)
    services = set()
    for replica in s.scalars(select(ServiceReplicaRow).where(ServiceReplicaRow.container.startswith(theirs))):
        renew_replica(replica)
        services.add(replica.service_id)
    if services:
        s.execute(
            update(ServiceRow)
            .where(ServiceRow.id.in_(services), ServiceRow.state == ServiceState.RUNNING.value)
            .values(state=ServiceState.STARTING.value)
        )


def for_sandbox(platform: Platform, memory_bytes: int) -> tuple[str, str] | None:
    """(id, proxy) of the up node with the most room for a sandbox on demand that asks for
    `memory_bytes`: among the nodes whose memory budget (run_memory) its sandboxes on demand leave
    that much of, else among all, the one whose slots less its runs and builds in flight and the
    sandboxes it holds are the most; None when no node is up. (Its runs' memory is not known here:
    they end soon, and the create waits in the node's line for them.)"""
    open_here = (
        SandboxRow.owner == NodeRow.instance,
        SandboxRow.status.in_([SandboxStatus.STARTING.value, SandboxStatus.RUNNING.value]),
    )
    with platform.store.session() as s:
        held = select(func.count()).select_from(SandboxRow).where(*open_here).scalar_subquery()
        memory = (
            select(func.coalesce(func.sum(SandboxRow.memory_bytes), 0)).where(*open_here).scalar_subquery()
        )
        fits = case(
            (NodeRow.memory_budget.is_(None), 0), (NodeRow.memory_budget - memory >= memory_bytes, 0), else_=1
        )
        found = s.execute(
            select(NodeRow.id, NodeRow.proxy)
            .where(NodeRow.state == UP, NodeRow.proxy.is_not(None))
            .order_by(fits, (NodeRow.slots - NodeRow.running - held).desc(), func.random())
            .limit(1)
        ).first()
    return (str(found[0]), str(found[1])) if found is not None else None


def proxy_of(platform: Platform, instance: str) -> tuple[str, str] | None:
    """(id, proxy) of the up node whose platform is `instance`; None for any other."""
    with platform.store.session() as s:
        found = s.execute(
            select(NodeRow.id, NodeRow.proxy).where(
                NodeRow.instance == instance, NodeRow.state == UP, NodeRow.proxy.is_not(None)
            )
        ).first()
    return (str(found[0]), str(found[1])) if found is not None else None


def in_flight(platform: Platform) -> int:
    """The runs and builds this platform has claimed and not ended."""
    with platform.store.session() as s:
        runs = s.scalar(
            select(func.count())
            .select_from(RunRow)
            .where(
                RunRow.claimed_by == platform.instance,
                RunRow.status.in_([RunStatus.STARTING.value, RunStatus.RUNNING.value]),
            )
        )
        builds = s.scalar(
            select(func.count())
            .select_from(BuildRow)
            .where(BuildRow.claimed_by == platform.instance, BuildRow.status == BuildStatus.BUILDING.value)
        )
    return int(runs or 0) + int(builds or 0)


@dataclass(frozen=True)
class _Other:
    """Another node that is up and has room, as its last heartbeat said."""

    images: frozenset[str]
    free: int


def claim_run(platform: Platform, node_id: str) -> str | None:
    """Claim a queued run for this node (`_mine_to_take` says which); None: nothing for it now."""
    now = utcnow()
    with platform.store.session() as s:
        queued = s.scalars(
            select(RunRow)
            .where(RunRow.status == RunStatus.QUEUED.value)
            .order_by(RunRow.queued_at, RunRow.id)
            .limit(CANDIDATES)
        ).all()
        candidates = [(run.id, run.queued_at, _image(s, run)) for run in queued]
        if not candidates:
            return None
        others = [
            _Other(frozenset(json.loads(images)), slots - running)
            for images, slots, running in s.execute(
                select(NodeRow.images, NodeRow.slots, NodeRow.running).where(
                    NodeRow.state == UP, NodeRow.id != node_id
                )
            )
            if running < slots
        ]
    free = int(platform.config.values.get("run_workers") or 1) - in_flight(platform)
    also = {"node": node_id}
    for run_id, queued_at, image in candidates:
        waited = (now - queued_at).total_seconds()
        if not _mine_to_take(image, waited, platform.present_base_tags, free, others):
            continue
        if queue.claim_one(
            platform.store, RunRow, run_id, RunStatus.QUEUED, RunStatus.STARTING, platform.instance, also
        ):
            return str(run_id)
    return None


def _image(s: Session, run: RunRow) -> str | None:
    """The image the run would start from now (None: not known yet, or not to be had)."""
    version = s.get(AgentVersionRow, run.agent_version_id)
    ws = s.get(WorkspaceRow, run.workspace_id)
    if version is None or ws is None:
        return None
    try:
        return choose_environment(s, ws, version).environment.image
    except OrchError:
        return None


def _mine_to_take(
    image: str | None, waited: float, mine: Collection[str], free: int, others: list[_Other]
) -> bool:
    """Whether this node takes a run now: at once if it holds the run's image; otherwise it
    leaves the run, for a while, to a node with room that holds the image (PREFER_FOR), and
    then to a node with more room than itself (SPREAD_FOR); after that, whoever looks first."""
    if (image is not None and image in mine) or waited >= PREFER_FOR:
        return True
    if image is not None and any(image in other.images for other in others):
        return False
    return waited >= SPREAD_FOR or not any(other.free > free for other in others)


def takes_deployment(platform: Platform) -> bool:
    """Whether this node claims the oldest queued deployment now (the node that deploys a
    service holds its lease and runs it): at once if no node that is up supervises fewer
    services than it; otherwise it leaves the deployment for SPREAD_FOR to those that do, and
    after that whoever looks first takes it."""
    now = utcnow()
    with platform.store.session() as s:
        oldest = s.scalar(
            select(func.min(ServiceDeploymentRow.queued_at)).where(
                ServiceDeploymentRow.status == DeploymentStatus.QUEUED.value
            )
        )
        if oldest is None or (now - oldest).total_seconds() >= SPREAD_FOR:
            return True
        held = dict.fromkeys(s.scalars(select(NodeRow.instance).where(NodeRow.state == UP)), 0)
        for holder, count in s.execute(
            select(ServiceLeaseRow.holder, func.count())
            .where(ServiceLeaseRow.expires_at > now)
            .group_by(ServiceLeaseRow.holder)
        ):
            if holder in held:
                held[holder] = int(count)
    mine = held.pop(platform.instance, 0)
    return all(count >= mine for count in held.values())
