"""Executing runs: claim a queued run, resolve and prepare its environment, install its
dependencies (cached), run it in a sandbox, and record the outcome. Runs are rows in the store,
so a restart loses nothing; `recover` settles runs a stopped server left in flight, and
`record_held` the ends a refusing store could not take while the server runs on."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Update, bindparam, select, update

from orch import config, metrics
from orch.builder import base_images, registry
from orch.builder.host import ca_mounts, proxy_env
from orch.builder.predefined import BASE_ENVIRONMENTS
from orch.bundle import Manifest
from orch.engine.base import ContainerExit, ContainerSpec, Mount
from orch.errors import EngineError, OrchError, RunFailed, store_full, store_refused
from orch.kept import kept
from orch.models import BuildStatus, EnvKind, RunStatus, advance, sources
from orch.sandbox import deps as deps_mod
from orch.sandbox import deps_cache, oci
from orch.sandbox.launcher import Isolation, sweep_all
from orch.sandbox.spec import BUNDLE_MISFIT_FIX, Limits, bundle_copy_bytes, bundle_misfit, run_spec
from orch.services import base_digests, host_check, nodes, run_memory
from orch.services import environments as envs
from orch.services import secrets as workspace_secrets
from orch.services.bundles import extracted as extracted_bundle
from orch.services.image_presence import still_here
from orch.services.output_store import Taken
from orch.services.platform import Platform
from orch.services.run_environment import choose_environment
from orch.services.run_output import RunOutput, note
from orch.sizes import format_size
from orch.store import queue, refusals
from orch.store.queue import left_by
from orch.store.schema import AgentVersionRow, BuildRow, EnvironmentRow, RunRow, WorkspaceRow, utcnow
from orch.workers import loop_runs

log = logging.getLogger(__name__)

_BEFORE_THE_AGENT = "cancelled before the agent started"
# What `recover` records for a run whose agent a stopped server interrupted; a worker that sees
# the server stopping under its run records the same, rather than the exit the stop caused.
_SERVER_STOPPED = "the server stopped while the run was running"
# A sandbox's init (catatonit) exits with 128 + the signal that ended its child, and the runtimes
# (runc, runsc) exit with the init's code: a SIGKILL and an exit(137) reach us as the same 137.
_CODE_137 = "exit code 137: killed by SIGKILL, or it exited with 137"

# How long a run's end waits for its followers to read it before the sandbox's removal (and the
# next warm start) goes on, on an otherwise idle server: their Python would share the
# interpreter with the read's, which took ~5 ms instead of ~1 then (docs/benchmarks.md). Runs
# nobody follows do not wait.
END_READ = 0.01


def claim(platform: Platform) -> str | None:
    """Move the oldest queued run to "starting" and return its id (None: queue empty); a cluster
    node chooses among the oldest (services/nodes.py). A stopping server claims none: a run it
    queued again as the stop began would be taken, and queued again, for as long as the stop
    lasts, each time counted as an interruption (found by a tester).

    Each claim is a pass of the run queue's workers (an idle one's every `poll` seconds): the
    ends a refusing store could not take are asked again first (`record_held`)."""
    if platform.stopping.is_set():
        return None
    record_held(platform)
    if platform.node is not None:
        return nodes.claim_run(platform, platform.node)
    return queue.claim(platform.store, RunRow, RunStatus.QUEUED, RunStatus.STARTING, platform.instance)


def sandbox_name(platform: Platform, run_id: str) -> str:
    return f"{platform.container_prefix}{run_id}"


def recover(platform: Platform) -> list[str]:
    """At start: remove this platform's leftover sandboxes and dependency installs; a run that had
    not started its agent is queued again (once), one whose agent was running is failed (it may
    have had effects)."""
    platform.engine.remove_containers({"org.orch.instance": platform.instance, "org.orch.kind": "run"})
    if swept := sweep_all(platform.launchers.values(), platform.container_prefix):
        log.info("removed what %d sandboxes of a stopped server left", swept)
    settled = []
    with platform.store.session() as s:
        for run in s.scalars(
            select(RunRow).where(
                RunRow.status.in_([RunStatus.STARTING.value, RunStatus.RUNNING.value]),
                left_by(RunRow, platform.instance),
            )
        ):
            if run.status == RunStatus.STARTING.value and run.attempts < 2:
                run.status = advance(run.status, RunStatus.QUEUED)
                said = "The server stopped while this run was starting; it was queued again."
            else:
                was = "starting" if run.status == RunStatus.STARTING.value else "running"
                run.status, run.finished_at = advance(run.status, RunStatus.FAILED), utcnow()
                metrics.of(platform).run_finished(RunStatus.FAILED)
                run.reason = f"the server stopped while the run was {was}"
                if was == "starting":
                    run.reason += f" ({run.attempts} times)"
                said = f"The server stopped during this run; it was marked failed ({run.reason})."
            note(s, run.id, said)
            settled.append(run.id)
    # A server stopped while it removed a finished sandbox leaves no container to find by label,
    # but the engine's leftovers of it (its cgroups): remove those by name, with its dependency
    # install's (sandbox/deps.py names it NAME-deps).
    for run_id in settled:
        name = sandbox_name(platform, run_id)
        for container in (name, f"{name}-deps"):
            platform.engine.remove_container(container, timeout=0)
    # With their containers gone: the dependency installs they cut (sandbox/deps_cache.py), and
    # what the cache holds beyond its size.
    cache = platform.config.home / "deps"
    if swept := deps_cache.sweep(cache):
        log.info("removed what %d dependency installs of a stopped server left", swept)
    deps_cache.evict(cache, int(platform.config.deps_cache_size))
    if too_much := run_memory.above_machine(platform.run_memory.total, config.memory()):
        log.warning("%s", too_much)
    if too_many := run_memory.above_nproc(platform.run_pids.total, oci.sandbox_nproc()):
        log.warning("%s", too_many)
    return settled


def execute(platform: Platform, run_id: str) -> None:
    """Take a claimed run to its end; every outcome is recorded, none raises: a bug must fail
    the run, not the worker. A store that refuses the run's end (its disk full) is asked again
    for a while (`_finish`); one that still refuses it has the end held on the platform, asked
    again at each pass of the run queue (`record_held`), and the worker goes on. An end not
    held (the server stopping, or too many held) leaves the run `running`, as a stopped server
    would, and the next start's `recover` settles it."""
    out = RunOutput(platform, run_id)
    held = False
    try:
        try:
            _execute(platform, run_id, out)
        except _Unrecorded:
            raise  # the end was asked of the store already, for as long as it is asked
        except OrchError as e:
            out.line(f"✗ {e}")
            _finish(platform, out, RunStatus.FAILED, None, e.message)
        except Exception as e:  # a bug must fail the run, not the worker
            full = "the store's disk was full" if store_full(e) else None
            if store_refused(e) is not None or full:  # the store refused, or the disk under ORCH_HOME
                # is full (a bundle extracted there): the machine's trouble, not a bug of orch
                log.warning(
                    "run %s: the store refused it while it was prepared (%s)", run_id, refusals.said(e)
                )
                reason = full or "the store did not answer while the run was prepared"
                out.line(f"✗ {reason}")
            else:
                log.exception("run %s crashed", run_id)
                out.line(f"✗ internal error: {e!r}")
                reason = full or f"internal error: {type(e).__name__}"
            _finish(platform, out, RunStatus.FAILED, None, reason)
    except _Unrecorded as e:
        held = e.held
        if held:
            log.warning(
                "run %s: the store still refuses its end; it is held and asked again until the store "
                "takes it",
                run_id,
            )
        else:  # the server stops, or too many ends are held: said in a line, no traceback
            log.warning(
                "run %s: its end could not be recorded (%s); it stays running until the server's "
                "next start settles it",
                run_id,
                refusals.said(e),
            )
    except Exception:
        log.exception(
            "run %s: its end could not be recorded; it stays running until the server's next start "
            "settles it",
            run_id,
        )
    finally:
        try:
            if not held:  # a held end stores the rest of the output with itself
                out.close()
        except Exception as e:
            if store_refused(e) is None:
                log.exception("storing the rest of run %s's output failed", run_id)
            else:  # it waits for the store (the platform's flusher), said once by the flusher
                log.warning(
                    "run %s: the rest of its output waits for the store (%s)", run_id, refusals.said(e)
                )
        platform.notify_runs(run_id)


def _cancelled(platform: Platform, run_id: str) -> bool:
    with platform.store.session() as s:
        return bool(s.scalar(select(RunRow.cancel_requested).where(RunRow.id == run_id)))


def _asking(run_id: str, what: str) -> refusals.Outage:
    """What a run asks the store again and again (its cancel checks, its wait for a build): a
    store that refuses is said once in the server's log, and once again when it answers."""
    return refusals.Outage(f"run {run_id}: {what}", log, "the run goes on and asks again")


def _cancel_known(platform: Platform, run_id: str, asking: refusals.Outage) -> bool | None:
    """Whether the run was cancelled; None when the store refused to say (not known now: the
    next check asks again, and the run goes on meanwhile, within its own timeout)."""
    return asking.ask(lambda: _cancelled(platform, run_id), None)


# The bounds of what the platform holds of the ends a store still refused after refusals.PAUSES:
# at most UNRECORDED_RUNS ends (one more is left to `recover`, as a stopped server's run), and
# at most UNRECORDED_OUTPUT bytes of their output not yet stored, all of them together (a run's
# that would go past it is dropped, its log saying so). An end alone is a few hundred bytes.
UNRECORDED_RUNS = 256
UNRECORDED_OUTPUT = 32 * 1024 * 1024
# How often the held ends are asked again, at most (the run queue's passes ask them).
UNRECORDED_RETRY = 1.0


class _Unrecorded(Exception):
    """The store refused a run's end every time `_finish` asked it; `held`: the end waits on the
    platform for `record_held`, else it is left to `recover`."""

    def __init__(self, message: str, held: bool = False) -> None:
        super().__init__(message)
        self.held = held


def _finish(
    platform: Platform, out: RunOutput, status: RunStatus, exit_code: int | None, reason: str | None
) -> None:
    """End the run, its output stored in the same transaction: whoever sees it ended reads all
    of its output. The reason is masked as the output is. A store that refuses it (its disk
    full, the database away) is asked again after each of refusals.PAUSES, unless the server is
    stopping; then `_Unrecorded` is raised, the end held on the platform (`_Held`) unless the
    server is stopping or too many are held."""
    end = _End(out, status, exit_code, reason)  # its time and its first ask: now
    try:
        refusals.ask_again(
            lambda: _end(platform, end), f"run {out.run_id}: recording its end", log, platform.stopping
        )
    except refusals.Refused as e:
        held = not platform.stopping.is_set() and _held(platform).hold(out.run_id, end)
        raise _Unrecorded(f"the store refused the end of run {out.run_id}", held) from e
    except refusals.Stopped as e:
        raise _Unrecorded(f"the store refused the end of run {out.run_id}") from e


@dataclass
class _End:
    """A run's end as its sandbox (or loop) gave it: recorded as ending `at`, whenever the store
    takes it (a run whose end waited out a full disk took the outage's length, found by a
    tester); `since` its first ask of the store, for the log."""

    out: RunOutput
    status: RunStatus
    exit_code: int | None
    reason: str | None
    at: datetime = field(default_factory=utcnow)
    since: float = field(default_factory=lambda: time.monotonic())  # read at the call: a test's clock
    waiting: int = 0  # bytes of its output held, counted in UNRECORDED_OUTPUT


class _Held(refusals.Held[_End]):
    """The ends a store refused past refusals.PAUSES, by run, with what they hold of their output
    (within UNRECORDED_RUNS and UNRECORDED_OUTPUT)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0  # bytes of output they hold, all of them (guarded by `lock`)

    def hold(self, key: str, item: _End) -> bool:
        """Keep `item` (its output, within UNRECORDED_OUTPUT); whether it is kept."""
        with self.lock:
            if len(self.items) >= UNRECORDED_RUNS:
                log.warning("run %s: %d run ends wait for the store already", key, len(self.items))
                return False
            item.out.flush()  # what its masking held back: nothing more comes
            item.waiting = _waiting(item.out)
            if self.waiting + item.waiting > UNRECORDED_OUTPUT:
                dropped, item.waiting = _drop_waiting(item.out), 0
                item.out.line(
                    f"→ {format_size(dropped)} of this run's output were dropped: the store refused "
                    "them longer than the server could hold them"
                )
            self.waiting += item.waiting
            self.items[key] = item
            return True

    def done(self, key: str) -> None:
        with self.lock:
            if (end := self.items.pop(key, None)) is not None:
                self.waiting -= end.waiting


def _held(platform: Platform) -> _Held:
    return kept(platform, "_unrecorded_ends", _Held)


def _waiting(out: RunOutput) -> int:
    """The bytes of `out` waiting to be stored."""
    with out.storing:
        taken = out.take()
        out.give_back(taken)
    return sum(len(data) for _stream, _start, data in taken.pieces)


def _drop_waiting(out: RunOutput) -> int:
    """Drop the output of `out` waiting to be stored (each stream then ends where its stored part
    ends, cut); how many bytes were dropped."""
    with out.storing:
        taken = out.take()
        for stream, start, _data in taken.pieces:
            out.sizes[stream] = min(out.sizes[stream], start)
        out.give_back(Taken([], cut=True))
    return sum(len(data) for _stream, _start, data in taken.pieces)


def record_held(platform: Platform) -> int:
    """Ask the store again for the ends it refused past refusals.PAUSES (called at each pass of
    the run queue's workers; at most once every UNRECORDED_RETRY seconds, by one of them at a
    time); how many it took. None is asked once the server is stopping: their runs are then left
    to `recover`, as a stopped server's."""

    def record(run_id: str, end: _End) -> None:
        if _end(platform, end):
            log.info(
                "run %s: its end (%s) was recorded, %.0f s after the store first refused it",
                run_id,
                end.status.value,
                time.monotonic() - end.since,
            )

    def bug(run_id: str, _held_end: _End) -> None:  # the run is left to `recover`, the others go on
        log.exception("run %s: recording its held end failed; the next start settles it", run_id)

    return _held(platform).settle(record, platform.stopping, bug, every=UNRECORDED_RETRY)


def _end(platform: Platform, end: _End) -> bool:
    """`_finish`'s one try: output not stored waits again for the next (`out.store`). Whether
    this ended the run (False: it had ended already, a cancel's or a recovery's)."""
    out, status = end.out, end.status
    with out.session() as s:
        why = None if end.reason is None else out.hide(end.reason)
        params = {"run_id": out.run_id, "code": end.exit_code, "why": why, "at": end.at}
        ended = s.connection().execute(_ending(status), params)
        if ended.rowcount == 0:  # ended already (a cancel, a recovery); else a move never allowed
            current = s.scalar(select(RunRow.status).where(RunRow.id == out.run_id))
            if current is None or RunStatus(current).final:
                return False
            advance(current, status)  # raises: the bug is reported, not hidden
    metrics.of(platform).run_finished(status)
    platform.notify_runs(out.run_id)
    return True


# What every run executes, built once and run as plain statements on the session's connection:
# an UPDATE through the ORM session would also look for the rows among the session's objects.


@functools.cache
def _ending(status: RunStatus) -> Update:
    """The run ended with `status`, if it may move there from where it is."""
    return (
        update(RunRow)
        .where(RunRow.id == bindparam("run_id"), RunRow.status.in_(sources(status)))
        .values(
            status=status.value,
            exit_code=bindparam("code", type_=RunRow.exit_code.type),
            reason=bindparam("why", type_=RunRow.reason.type),
            finished_at=bindparam("at", type_=RunRow.finished_at.type),
        )
    )


# The run, its version and its workspace, in one query.
_PLANNED = (
    select(RunRow, AgentVersionRow, WorkspaceRow)
    .join(AgentVersionRow, AgentVersionRow.id == RunRow.agent_version_id)
    .join(WorkspaceRow, WorkspaceRow.id == RunRow.workspace_id)
    .where(RunRow.id == bindparam("run_id"))
)
_CHOSEN = (
    update(RunRow)
    .where(RunRow.id == bindparam("run_id"))
    .values(
        environment_id=bindparam("env_id", type_=RunRow.environment_id.type),
        environment_name=bindparam("env_name", type_=RunRow.environment_name.type),
        environment_rule=bindparam("rule", type_=RunRow.environment_rule.type),
        isolation=bindparam("runtime", type_=RunRow.isolation.type),
    )
)
# To running, unless a cancel came meanwhile: the same statement checks it (one look at the store).
_RUNNING = (
    update(RunRow)
    .where(
        RunRow.id == bindparam("run_id"),
        RunRow.status.in_(sources(RunStatus.RUNNING)),
        RunRow.cancel_requested.is_not(True),
    )
    .values(
        status=RunStatus.RUNNING.value,
        deps=bindparam("deps_status", type_=RunRow.deps.type),
        container=bindparam("sandbox", type_=RunRow.container.type),
        image=bindparam("image_ref", type_=RunRow.image.type),
    )
)


@dataclass(frozen=True)
class Plan:
    """What a claimed run needs, read from the store once."""

    manifest: Manifest
    env_id: str
    env_kind: EnvKind
    env_name: str
    rule: str
    isolation: Isolation
    env: dict[str, str]  # the run's own --env values
    input: str
    timeout: int | None
    bundle_sha: str
    deps_files: list[str]
    workspace_id: str
    command: list[str]
    # The agent's workspace secrets, by name: never printed (repr), recorded or logged.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # A loop agent's API key (its loop.api_key_secret): for the model's endpoint, not the sandbox.
    loop_key: str | None = field(default=None, repr=False)


def _plan(platform: Platform, run_id: str, out: RunOutput) -> Plan:
    """Choose the run's environment (recorded on the run) and read what it needs."""
    with platform.store.session() as s:
        planned = s.execute(_PLANNED, {"run_id": run_id}).one_or_none()
        if planned is None:  # a store of before agent deletes checked for queued runs at once
            raise RunFailed(
                "The run's agent version was deleted after the run was queued.",
                "Publish the agent again if it is still wanted, then run it.",
            )
        run, version, ws = planned
        # Queued again, or on a cluster's node (whose server may have noted that the run waited
        # for a node): its output goes on after what is stored.
        if run.attempts > 1 or platform.node is not None:
            out.resume(s)
        manifest = Manifest.model_validate_json(version.manifest)
        # Before anything is prepared: a missing secret fails the run, naming it.
        secrets = workspace_secrets.resolve(s, platform.config, ws, manifest.secrets)
        key_name = manifest.loop.api_key_secret if manifest.loop else None
        loop_key = (
            workspace_secrets.resolve(s, platform.config, ws, [key_name])[key_name] if key_name else None
        )
        chosen = choose_environment(s, ws, version)
        env = chosen.environment
        isolation = Isolation(manifest.isolation or platform.config.isolation)
        s.connection().execute(
            _CHOSEN,
            {
                "run_id": run_id,
                "env_id": env.id,
                "env_name": env.name,
                "rule": chosen.rule.value,
                "runtime": isolation.value,
            },
        )
        if run.started_at is not None:  # set by the claim
            metrics.of(platform).phase("queue", (run.started_at - run.queued_at).total_seconds())
        if env.kind == EnvKind.PREDEFINED.value:
            envs.ensure_built(platform, s, env)
        return Plan(
            manifest=manifest,
            env_id=env.id,
            env_kind=EnvKind(env.kind),
            env_name=env.name,
            rule=chosen.rule.value,
            isolation=isolation,
            env=json.loads(run.env),
            input=run.input,
            timeout=run.timeout,
            bundle_sha=version.bundle_sha256,
            deps_files=json.loads(version.deps_files),
            workspace_id=ws.id,
            command=json.loads(version.command),
            secrets=secrets,
            loop_key=loop_key,
        )


def _dependencies(
    platform: Platform, run_id: str, plan: Plan, image: str, base: ContainerSpec, out: RunOutput
) -> deps_mod.Deps:
    """The bundle's dependencies for this image, installed or found in the cache. The install
    sandbox's memory is held in the server's budget (run_memory) while it runs, as a run's is;
    the result holds its cache entry until `release`."""
    bundle_dir = extracted_bundle(platform, plan.bundle_sha)
    files = {n: (bundle_dir / n).read_bytes() for n in plan.deps_files if (bundle_dir / n).is_file()}
    image_id = _image_id(platform, plan, image) if files else ""

    @contextlib.contextmanager
    def admit(need: int) -> Iterator[bool]:
        with _reserved(
            platform, run_id, out, need, deps_mod.INSTALL_PIDS, "its dependency install"
        ) as waited:
            yield waited is None

    return deps_mod.ensure(
        platform.engine,
        cache_root=platform.config.home / "deps",
        image=image,
        image_id=image_id,
        bundle_dir=bundle_dir,
        dep_files=files,
        base_spec=base,
        log=out.line,
        timeout=float(platform.config.build_timeout),
        workspace_id=plan.workspace_id,
        bundle_sha=plan.bundle_sha,
        should_stop=functools.partial(
            _install_stop, platform, run_id, _asking(run_id, "asking whether it was cancelled")
        ),
        memory=int(platform.config.install_memory),
        admit=admit,
        cache_size=int(platform.config.deps_cache_size),
    )


def _install_stop(platform: Platform, run_id: str, asking: refusals.Outage) -> bool:
    """The dependency install's cancel check: a store that refuses to say is no cancel."""
    return bool(_cancel_known(platform, run_id, asking))


def _image_id(platform: Platform, plan: Plan, image: str) -> str:
    """The image's id, which keys the dependency cache: from the launcher's image cache (it
    mounts that image for the sandbox anyway; a stat, not a `podman image inspect`, per run),
    else from the engine."""
    missing = RunFailed(
        f"The image of {plan.env_name} ({image}) is missing.",
        f"Rebuild the environment {plan.env_name}, then run again.",
    )
    if launcher := platform.launchers.get(plan.isolation):
        try:
            return launcher.image_id(image)
        except EngineError:
            raise missing from None
    info = platform.engine.inspect_image(image)
    if info is None:
        raise missing
    return info.id


def _execute(platform: Platform, run_id: str, out: RunOutput) -> None:
    claimed = time.monotonic()
    plan = _plan(platform, run_id, out)
    out.mask([*plan.secrets.values(), plan.loop_key or ""])
    out.line(f"→ environment {plan.env_name} ({plan.rule.replace('-', ' ')})")
    if problem := platform.host_problem:
        said = problem.message[:1].lower() + problem.message[1:]
        raise RunFailed(f"No sandbox can start on the server's machine: {said}", problem.fix)
    _check_fits(platform, plan)
    try:
        image = _ready_image(platform, run_id, plan, out)
    except _CancelledWaiting:  # a cancelled run, not a failed one
        _finish(platform, out, RunStatus.CANCELLED, None, _BEFORE_THE_AGENT)
        return
    manifest = plan.manifest
    limits = Limits(
        cpus=manifest.resources.cpus,
        memory_bytes=manifest.resources.memory_bytes,
        pids=manifest.resources.pids,
        timeout=plan.timeout or manifest.resources.timeout,
    )
    labels = {**platform.labels, "org.orch.kind": "run", "org.orch.run": run_id}
    host_mounts = [Mount(h, c) for h, c in ca_mounts(platform.config).items()]
    # What a dependency install runs in: the run's image, user and mounts, with limits of its own.
    base = ContainerSpec(
        image=image,
        argv=[],
        name=sandbox_name(platform, run_id),
        labels=labels,
        env=proxy_env(platform.config),
        user="1000:1000",
        mounts=host_mounts,
        cpus=limits.cpus,
    )
    # The install first, its memory held in the budget while it runs (not the run's share too:
    # a run waiting for the install's share while holding its own could wait for ever).
    try:
        deps = _dependencies(platform, run_id, plan, image, base, out)
    except deps_mod.Cancelled:  # the install saw the cancel: a cancelled run, not a failed install
        if platform.stopping.is_set() and not _cancelled(platform, run_id):
            _queue_again(platform, out, "its dependency install waited for its share")
            return
        _finish(platform, out, RunStatus.CANCELLED, None, _BEFORE_THE_AGENT)
        return
    try:
        with _reserved(platform, run_id, out, limits.memory_bytes, limits.pids, "this one") as waited_for:
            if waited_for and platform.stopping.is_set() and not _cancelled(platform, run_id):
                _queue_again(platform, out, f"it waited for {waited_for}")
                return
            if waited_for:
                reason = f"cancelled while it waited for {waited_for}"
                _finish(platform, out, RunStatus.CANCELLED, None, reason)
                return
            _in_sandbox(platform, run_id, out, plan, image, limits, claimed, deps, labels, host_mounts)
    finally:
        deps.release()  # its sandbox has ended: the cache may remove its dependencies now


def _check_fits(platform: Platform, plan: Plan) -> None:
    """Before anything is prepared: a bundle that the sandbox's working directory can't hold fails
    the run, saying so (its copy there would fail with the agent's exit code, as if it had)."""
    copy = bundle_copy_bytes(str(extracted_bundle(platform, plan.bundle_sha)))
    if misfit := bundle_misfit(copy, plan.manifest.resources.memory_bytes):
        raise RunFailed(misfit, BUNDLE_MISFIT_FIX)


@contextlib.contextmanager
def _reserved(
    platform: Platform, run_id: str, out: RunOutput, memory: int, pids: int, who: str
) -> Iterator[str | None]:
    """Hold `memory` bytes of run_memory, then `pids` processes of run_pids, while inside (after
    waiting in each line, saying so). Yields None when held; when the run was cancelled while it
    waited, what it waited for ("memory", "processes"), holding nothing."""
    # A stopping server starts no sandbox: the stop frees the shares of the runs it ends, and a
    # run waiting for them would start in the middle of it (found by a tester).
    cancelled = _stop_check(platform, run_id)
    stop = lambda: platform.stopping.is_set() or cancelled()  # noqa: E731

    def said(budget: str, in_use: int) -> None:
        if budget == "memory":
            _waits_for_memory(platform, out, memory, who, in_use)
        else:
            _waits_for_processes(platform, out, pids, who, in_use)

    with platform.budgets.reserved(memory, pids, stop, said) as waited_for:
        yield waited_for


def _queue_again(platform: Platform, out: RunOutput, why: str) -> None:
    """Queue the run again, its agent never started: the server stopped while `why`. The next
    start (or another server of the store) runs it, as `recover` queues a run left starting."""
    out.line(f"The server stopped while {why}; it was queued again.")
    with out.session() as s:
        s.execute(
            update(RunRow)
            .where(RunRow.id == out.run_id, RunRow.status == RunStatus.STARTING.value)
            .values(status=advance(RunStatus.STARTING, RunStatus.QUEUED).value)
        )
    platform.notify_runs(out.run_id)


def _waits_for_memory(platform: Platform, out: RunOutput, need: int, who: str, in_use: int) -> None:
    total = platform.run_memory.total
    out.line(
        f"→ waiting for memory: other runs and sandboxes hold {format_size(in_use)} of the "
        f"{format_size(total)} that sandboxes may have at once (run_memory), and {who} asks for "
        f"{format_size(need)}"
    )


def _waits_for_processes(platform: Platform, out: RunOutput, need: int, who: str, in_use: int) -> None:
    total = platform.run_pids.total
    out.line(
        f"→ waiting for processes: other runs and sandboxes may have {in_use:,} of the {total:,} "
        f"processes that sandboxes may have at once (run_pids), and {who} asks for {need:,}"
    )


def _in_sandbox(
    platform: Platform,
    run_id: str,
    out: RunOutput,
    plan: Plan,
    image: str,
    limits: Limits,
    claimed: float,
    deps: deps_mod.Deps,
    labels: dict[str, str],
    host_mounts: list[Mount],
) -> None:
    """The run in its sandbox, within its share of the memory budget: the sandbox (or the
    managed loop's) with its dependencies, the outcome."""
    manifest = plan.manifest
    spec = run_spec(
        name=sandbox_name(platform, run_id),
        image=image,
        command=plan.command,
        bundle_dir=extracted_bundle(platform, plan.bundle_sha),
        deps=deps,
        env={
            **proxy_env(platform.config),
            **manifest.env,
            **plan.env,
            **plan.secrets,  # over --env: the workspace's value is the one the agent asked for
            "ORCH_INPUT": plan.input,
            "ORCH_RUN_ID": run_id,
        },
        stdin=plan.input.encode(),
        limits=limits,
        network=manifest.network,
        labels=labels,
        host_mounts=host_mounts,
    )
    params = {"run_id": run_id, "deps_status": deps.status, "sandbox": spec.name, "image_ref": image}
    moved = _to_running(platform, out, params)
    if moved is None:  # the server stopped while the store refused it: left starting, for `recover`
        return
    if moved == 0 and _cancelled(platform, run_id):
        _finish(platform, out, RunStatus.CANCELLED, None, _BEFORE_THE_AGENT)
        return
    platform.notify_runs(run_id)
    measure = metrics.of(platform)
    prepared = time.monotonic() - claimed
    if manifest.loop is not None:
        measure.phase("prepare", prepared)  # the loop observes start, run and exit (loop_runs.py)
        with measure.sandbox_open():
            done = loop_runs.execute(
                platform,
                run_id,
                manifest.loop,
                plan.isolation,
                spec,
                plan.input,
                plan.loop_key,
                out.hide,
                float(limits.timeout),
                _stop_check(platform, run_id, loop=True),
                out,
            )
        with measure.timed("store"):
            if done.answer is not None:  # masked, and within stdout's bound: the `final` event's text
                out.write("stdout", done.answer.encode())
            if done.truncated:  # cut as stdout would have cut it: flagged as stdout's cut is,
                out.give_back(Taken([], cut=True))  # with the end (a refusing store holds both)
            out.flush()
            status, reason = _unless_stopping(platform, done.status, done.reason, run_id)
            # A loop has no process of its own to exit: 0 when it answered, none otherwise.
            _finish(platform, out, status, 0 if status == RunStatus.SUCCEEDED else None, reason)
        return
    ended: list[ContainerExit] = []

    def record(result: ContainerExit) -> None:
        """The run's end, recorded as soon as the sandbox has exited: its removal goes on after,
        and its followers need not wait for it. Nor share the interpreter with it: on a server
        with no other sandbox open, the removal and the next warm start wait until they have
        read the end (END_READ at most); under load, nothing waits."""
        out.flush()  # before the run is seen to end: its followers read the whole output
        with measure.timed("store"):
            status, reason = _unless_stopping(platform, *outcome(result, limits, out.stderr_tail))
            code = None if reason == _SERVER_STOPPED else result.exit_code
            _finish(platform, out, status, code, reason)
        ended.append(result)
        if measure.sandboxes_open() <= 1:
            platform.until_followed(run_id, END_READ)

    with measure.sandbox_open():
        result = platform.launcher(plan.isolation).run_container(
            spec,
            lambda b: out.write("stdout", b),
            lambda b: out.write("stderr", b),
            timeout=float(limits.timeout),
            should_stop=_stop_check(platform, run_id),
            on_exit=record,
        )
    if not ended:
        record(result)
    # The launcher's own preparing (root, config) is part of preparing the sandbox.
    measure.phase("prepare", prepared + result.timings.get("prepare", 0.0))
    if "start" in result.timings:  # a launcher that knows them (the fake engine does not)
        measure.sandbox_started(result.warm)
        measure.phase("start", result.timings["start"])
        measure.phase("run", result.timings["run"])
        measure.phase("exit", result.timings["exit"])


def _to_running(platform: Platform, out: RunOutput, params: dict[str, str]) -> int | None:
    """Move the run to running (the rows moved: 0 when a cancel came first), its notes so far
    ("→ environment ...") stored with it: one change for its followers, not two. A store that
    refuses it is asked again after each of refusals.PAUSES, as a run's end is: the agent has
    not started, so nothing is lost while it waits. None when the server stops meanwhile (the run
    is left starting: the next start's `recover` queues it again); RunFailed, saying so, when the
    store refused it every time."""

    def move() -> int:
        with out.session() as s:
            return int(s.connection().execute(_RUNNING, params).rowcount)

    try:
        return refusals.ask_again(move, f"run {out.run_id}: moving it to running", log, platform.stopping)
    except refusals.Refused:
        raise RunFailed(
            "The store did not answer when the run was to start; its agent never started.",
            "Run the agent again once the store answers.",
        ) from None
    except refusals.Stopped:
        log.warning(
            "run %s: the server stopped while the store refused its start; the next start queues it again",
            out.run_id,
        )
        return None


def _stop_check(platform: Platform, run_id: str, loop: bool = False) -> Callable[[], bool]:
    """A cheap cancellation check: the store is asked at most once a second, the first time a
    second after the start (which checked it). A cancel, once seen, stays seen: one check may be
    asked by several (a loop's tool, then the loop itself), and each must learn of it.

    A `loop`'s also stops once the server is stopping: the stop ends its tools' sandbox, and the
    loop must not hand the killed tool's result to the model and record the model's answer as
    the run's (it did: a run cut off by the stop said `succeeded`, after a model call made
    during the stop). A code run's sandbox is ended by the stop itself.

    A store that refuses to answer (`_cancel_known`) is no cancel: the run goes on, and the next
    check asks again (a PostgreSQL restart under a run failed it: found by a tester)."""
    last = [time.monotonic()]
    seen = [False]
    asking = _asking(run_id, "asking whether it was cancelled")

    def check() -> bool:
        if loop and platform.stopping.is_set():
            return True
        now = time.monotonic()
        if seen[0] or now - last[0] < 1.0:
            return seen[0]
        last[0] = now
        seen[0] = bool(_cancel_known(platform, run_id, asking))
        return seen[0]

    return check


def _unless_stopping(
    platform: Platform, status: RunStatus, reason: str | None, run_id: str | None = None
) -> tuple[RunStatus, str | None]:
    """The run's outcome, unless the server is stopping: a run that failed then failed because
    the stop killed its sandbox (the engine's 125, a tool's sandbox gone), and a loop stopped
    as if cancelled (`run_id`'s, when nobody asked for a cancel) was stopped by it: each is
    recorded as `recover` would record it."""
    if not platform.stopping.is_set():
        return status, reason
    if status == RunStatus.FAILED or (
        status == RunStatus.CANCELLED
        and run_id is not None
        and not _cancel_known(platform, run_id, _asking(run_id, "asking whether it was cancelled"))
    ):
        return RunStatus.FAILED, _SERVER_STOPPED
    return status, reason


def outcome(result: ContainerExit, limits: Limits, stderr_tail: bytes) -> tuple[RunStatus, str | None]:
    """The run's final status and a reason a user understands. An agent that exited 0 by itself
    as a cancel or its timeout came (a kill ends it 137, never 0) succeeded: its work is done, and
    `cancelled` with exit code 0 said two things at once (found by a tester)."""
    if result.exit_code == 0 and not result.oom_killed:
        return RunStatus.SUCCEEDED, None
    if result.cancelled:
        return RunStatus.CANCELLED, "cancelled while running"
    if result.timed_out:
        return RunStatus.TIMED_OUT, f"timed out after {limits.timeout} s"
    if result.oom_killed:
        return RunStatus.FAILED, f"killed: memory limit {_size(limits.memory_bytes)}"
    # From the launcher's facts (the sandbox's cgroup), never from what the agent wrote.
    if result.pids_limit_reached:
        return RunStatus.FAILED, f"exit code {result.exit_code}: process limit ({limits.pids}) reached"
    if result.exit_code == 137:  # not the memory limit's (above); a SIGKILL? (see _CODE_137)
        return RunStatus.FAILED, _CODE_137
    if result.exit_code == 159:  # 128 + SIGSYS: what the seccomp filter does to a 32-bit syscall
        return RunStatus.FAILED, "killed (SIGSYS): a system call the sandbox does not allow"
    # 125 is the engine's own failure to start the sandbox: name the missing host piece.
    text = stderr_tail.decode("utf-8", "replace")
    if result.exit_code == 125 and (missing := host_check.diagnose(text)):
        return RunStatus.FAILED, f"the sandbox could not start: {missing}"
    return RunStatus.FAILED, f"exit code {result.exit_code}"


def _size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


class _CancelledWaiting(Exception):
    """The run was cancelled while it waited for its environment's build."""


def _ready_image(platform: Platform, run_id: str, plan: Plan, out: RunOutput) -> str:
    """The environment's image, waiting for its build when it is queued or building. A store
    that refuses to answer meanwhile is asked again at the next look (within the wait's bound)."""
    env_id, kind, name = plan.env_id, plan.env_kind, plan.env_name
    if kind == EnvKind.BASE:
        return _base_tag(platform, plan.isolation, BASE_ENVIRONMENTS[name][0], out)
    announced = False
    deadline = time.monotonic() + float(platform.config.build_timeout) + 60
    asking = _asking(run_id, f"waiting for the environment {name}")

    def look() -> tuple[EnvironmentRow | None, BuildRow | None, str | None, str | None]:
        with platform.store.session() as s:
            env = s.get(EnvironmentRow, env_id)
            build = s.get(BuildRow, env.build_id) if env and env.build_id else None
            return env, build, *((env.image, env.image_digest) if env else (None, None))

    while True:
        if (seen := asking.ask(look, None)) is not None:
            env, build, image, digest = seen
            if (found := _built(platform, plan, out, env, build, image, digest)) is not None:
                return found
            if not announced:
                out.line(f"Waiting for the environment {name} to build")
                announced = True
        if _cancel_known(platform, run_id, asking):
            out.line(f"Cancelled while the environment {name} was building (its build goes on)")
            raise _CancelledWaiting()
        if time.monotonic() > deadline:
            raise RunFailed(f"{name} took too long to build.", "Read its build log to see where it stands.")
        platform.wake_builds.set()
        time.sleep(0.5)


def _built(
    platform: Platform,
    plan: Plan,
    out: RunOutput,
    env: EnvironmentRow | None,
    build: BuildRow | None,
    image: str | None,
    digest: str | None,
) -> str | None:
    """`_ready_image`'s one look: the image when there is one, None while its build goes on;
    RunFailed when there will be none."""
    name = plan.env_name
    if env is None:
        raise RunFailed(f"The environment {name} was deleted.", "Run the agent again.")
    if image:  # an earlier build's, ready: a rebuild under way or failed does not take it away
        if build is not None and build.status != BuildStatus.READY.value:
            out.line(_earlier_image(name, build))
        return _here(platform, plan.isolation, image, digest, out)
    if build is None or build.status == BuildStatus.FAILED.value:
        why = (build.error or "").rstrip(".") if build else "never built"
        at_step = build is not None and envs.dockerfile_at_fault(build)
        raise RunFailed(
            f"The environment {name} failed to build: {why}.",
            envs.failed_build_fix(name, plan.env_kind, at_step=at_step),
        )
    return None


def _earlier_image(name: str, build: BuildRow) -> str:
    """What a run says when it runs its environment's image while the latest build is not it."""
    if build.status == BuildStatus.FAILED.value:
        return f"→ the latest build of {name} failed ({build.id}); this run uses the image of the one before"
    return f"→ {name} is being built again ({build.id}); this run uses its current image"


def _here(platform: Platform, isolation: Isolation, image: str, digest: str | None, out: RunOutput) -> str:
    """`image`, pulled by its registry `digest` first when this machine lacks it (another
    machine built it: builder/registry.py); asked of the engine once per process, not once per
    run, unless it went meanwhile (`image_presence.still_here`)."""
    if not still_here(platform, isolation, image):
        if platform.engine.inspect_image(image) is None:
            if digest:
                out.line(f"Pulling {image} from the registry")
            try:
                registry.ensure_image(platform.engine, platform.config, image, digest)
            except EngineError as e:
                raise RunFailed(e.message, e.fix) from None
        platform.present_base_tags.add(image)
    return image


def _base_tag(platform: Platform, isolation: Isolation, recipe: str, out: RunOutput) -> str:
    """The base image's tag: pulled by its recorded digest when a registry has it, else built
    first if missing (asked of the engine once per process, not per run, unless it went)."""
    tag = base_images.image_tag(recipe)
    if not still_here(platform, isolation, tag):
        digests = base_digests.known(platform.store) if platform.config.registry else {}
        base_images.ensure(platform.engine, platform.config, out.line, [recipe], digests=digests)
        platform.present_base_tags.add(tag)
    return tag
