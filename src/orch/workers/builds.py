"""Build jobs: claim a queued build from the store, run it on the engine, record the outcome.

The queue is the `builds` table, so a restart loses nothing; `recover` settles builds that a
stopped server left in "building".
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orch import dockerfile, metrics
from orch.builder import base_images, cache_dirs, registry
from orch.builder.cache import cache_key
from orch.builder.host import ca_mounts, proxy_env
from orch.dockerfile import cache_mounts
from orch.engine.base import BuildRequest
from orch.errors import BuildFailed, EngineError, OrchError, store_refused
from orch.kept import kept
from orch.models import BuildStatus, advance
from orch.services import base_digests, build_log, build_output, build_requests, environments, images
from orch.services.platform import Platform
from orch.sizes import format_apart, format_size
from orch.store import queue, refusals
from orch.store.queue import left_by
from orch.store.schema import BuildRow, EnvironmentRow, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a build interrupted by a server stop is tried once more, then failed


def claim(platform: Platform) -> str | None:
    """Move the oldest queued build to "building" and return its id (None: queue empty). What a
    refusing store did not take of earlier builds is asked again first (`_writes`)."""
    _writes(platform).settle_writes(platform.stopping)
    also = {"node": platform.node} if platform.node else None
    return queue.claim(
        platform.store, BuildRow, BuildStatus.QUEUED, BuildStatus.BUILDING, platform.instance, also
    )


def recover(platform: Platform) -> list[str]:
    """At start: end the builds a stopped server left running, and re-queue (or fail) them."""
    settled = []
    interrupted = select(BuildRow).where(
        BuildRow.status == BuildStatus.BUILDING.value, left_by(BuildRow, platform.instance)
    )
    # Before any build of this platform starts (this runs before the build workers and the
    # deploy worker): its `podman build`s still running (found by their owner argument, so one
    # whose environment was deleted meanwhile too), what their RUN steps started, and what
    # killed builds left behind go, environments' and services' alike.
    platform.engine.remove_build_leftovers(platform.instance)
    with platform.store.session() as s:
        for b in s.scalars(interrupted):
            _interrupted(platform, s, b)
            settled.append(b.id)
    # Images that nothing names (failed builds' above included), while still nothing builds.
    images.remove_unnamed(platform)
    _evict_cache_mounts(platform)
    _check_reserve(platform)
    return settled


def _interrupted(platform: Platform, s: Session, b: BuildRow) -> None:
    """Settle build `b`, which a server stop interrupted (the stop itself, or the next start's
    `recover` when the stop could not): queued again, or failed once it was tried MAX_ATTEMPTS
    times; its log says which."""
    note = "The server stopped during this build"
    if b.attempts < MAX_ATTEMPTS:
        b.status = advance(b.status, BuildStatus.QUEUED)
        b.step, b.step_text, b.worker_pid = 0, "", None
        build_output.note(s, b.id, f"\n{note}; it was queued again.\n")
    else:
        b.status, b.finished_at, b.worker_pid = advance(b.status, BuildStatus.FAILED), utcnow(), None
        env = s.get(EnvironmentRow, b.environment_id)
        again = f"`orch env build {env.name}`" if env else "`orch env build` and its name"
        b.error = f"{note} {b.attempts} times; it was not tried again. Build it again with {again}."
        build_output.note(s, b.id, f"\n{b.error}\n")
        metrics.of(platform).build_finished("failed")


def _check_reserve(platform: Platform) -> None:
    """Say at start when ORCH_BUILD_DISK_RESERVE is more than the whole file system of the
    container storage holds: every build would fail before its first step."""
    reserve = int(platform.config.build_disk_reserve)
    if not reserve or not platform.runs_work:
        return
    try:
        found = platform.engine.storage_disk()
    except (OSError, OrchError) as e:  # said again by the builds that meet it
        log.warning("reading the size of the container storage's disk: %s", e)
        return
    if found is None:
        return
    where, disk = found
    if reserve > disk:
        log.warning(
            "ORCH_BUILD_DISK_RESERVE is %s, more than the %s of the whole file system that holds "
            "the container storage (%s): every build will fail before its first step. Set it "
            "below that (the default is 2Gi), or 0 for none.",
            format_size(reserve),
            format_size(disk),
            where,
        )


def _evict_cache_mounts(platform: Platform) -> None:
    """Keep this platform's cache mounts' directories within `cache_mounts_size`
    (builder/cache_dirs.py): never a reason for a build to fail."""
    try:
        cache_dirs.evict(platform.config.home, platform.instance, int(platform.config.cache_mounts_size))
    except OSError as e:
        log.warning("removing cache mounts' directories: %s", e)


@dataclass(frozen=True)
class _Job:
    """What a build is of: its environment as it was when the build started."""

    build_id: str
    env_id: str
    name: str
    scope: str  # the environment's workspace (or SHARED): whose cache mounts the build uses
    text: str
    no_cache: bool


class _Gone(Exception):
    """The build's environment was deleted while it ran: nothing is left to record."""


class _Interrupted(Exception):
    """The server is stopping: the build was stopped, to be settled as `_interrupted` says."""


def run(platform: Platform, build_id: str, stopping: threading.Event | None = None) -> None:
    """Run one claimed build to its end; every outcome is recorded, none raises. Once `stopping`
    is set (the server stops), a running `podman build` is stopped with everything it started
    (within a second or two), and the build is settled as a stop settles it (`_interrupted`).

    A store that refuses for a while (errors.store_refused) does not stop a build under way: its
    progress and its "still building?" looks go on without it, its log waits for it. One that
    refuses a write the build cannot go on without has the build queued again (at most
    refusals.REQUEUES times, its layers cached; then it fails, saying so); what is recorded then
    is asked again until the store takes it (refusals.Writes). Found by a tester: a full disk
    under the store left the build `building` until a restart, its log a traceback."""
    stopping = stopping or threading.Event()
    started = time.monotonic()
    # Only this attempt's lines make the excerpt: an earlier one (before a server stop) failed
    # for other reasons.
    excerpt = build_log.Excerpt()
    try:
        with platform.store.session() as s:
            b = s.get(BuildRow, build_id)
            env = s.get(EnvironmentRow, b.environment_id) if b else None
            if b is None or env is None:  # deleted while queued
                if b is not None:
                    b.status, b.error, b.finished_at = (
                        advance(b.status, BuildStatus.FAILED),
                        "deleted",
                        utcnow(),
                    )
                    metrics.of(platform).build_finished("failed", time.monotonic() - started)
                return
            job = _Job(build_id, env.id, env.name, env.scope, env.dockerfile or "", b.no_cache)
        stored = build_output.BuildOutput(platform, build_id)
    except Exception as e:
        if store_refused(e) is None:
            raise
        _refused(platform, build_id, e, None, excerpt, stopping)
        return

    def out(line: str) -> None:
        excerpt.add(line)
        stored.line(line)

    outcome: metrics.BuildOutcome = "failed"
    try:
        _build(platform, job, out, stored, stopping)
        outcome = "ready"
    except _Gone:
        log.info("build %s stopped: its environment %s was deleted", build_id, job.env_id)
    except _Interrupted:
        log.info("build %s stopped: the server is stopping", build_id)
        with _with_log(platform, stored) as s:
            if (b := s.get(BuildRow, build_id)) is not None:
                _interrupted(platform, s, b)
        return  # its outcome is counted when it ends (or by `_interrupted`)
    except BuildFailed as e:
        _failed(platform, stored, e, excerpt.lines() or list(e.details.get("tail") or []), stopping)
    except OrchError as e:
        out(f"error: {e}")
        _failed(platform, stored, e, excerpt.lines(), stopping)
    except Exception as e:  # a bug must fail the build, not kill the worker
        if store_refused(e) is not None:
            if _refused(platform, build_id, e, stored, excerpt, stopping):
                return  # queued again: counted when it ends
        else:
            log.exception("build %s crashed", build_id)
            out(f"internal error: {e!r}")
            _failed(platform, stored, OrchError(f"Internal error: {e!r}"), excerpt.lines(), stopping)
    finally:
        try:
            stored.close()
        except Exception as e:
            if store_refused(e) is None:
                raise
            # Its log waits for the store (the platform's flusher stores it once it answers).
    _writes(platform).ended(build_id)
    metrics.of(platform).build_finished(outcome, time.monotonic() - started)


def _refused(
    platform: Platform,
    build_id: str,
    e: Exception,
    stored: build_output.BuildOutput | None,
    excerpt: build_log.Excerpt,
    stopping: threading.Event,
) -> bool:
    """The store refused a write the build under way could not go on without: queue it again
    (True), or fail it (False) once it was queued again refusals.REQUEUES times for that."""
    why, writes = refusals.said(e), _writes(platform)
    if writes.requeue(build_id) is not None:
        log.warning("build %s: the store refused it under way (%s); it is queued again", build_id, why)
        writes.write(build_id, "queue it again", lambda: _requeue(platform, build_id, stored, why), stopping)
        return True
    log.warning("build %s: the store refused it under way again (%s); it fails", build_id, why)
    error = OrchError(
        f"The store did not answer during the build ({why}), {refusals.REQUEUES + 1} times in a row.",
        "Check that the database (and the disk under it) answers, then build again.",
    )
    _failed(platform, stored, error, excerpt.lines(), stopping, build_id)
    return False


def _failed(
    platform: Platform,
    stored: build_output.BuildOutput | None,
    error: OrchError,
    excerpt: list[str],
    stopping: threading.Event,
    build_id: str = "",
) -> None:
    """`_fail`, asked of a refusing store until it takes it (refusals.Writes)."""
    key = stored.build_id if stored is not None else build_id
    _writes(platform).write(
        key, "record its failure", lambda: _fail(platform, stored, error, excerpt, key), stopping
    )


def _with_log(
    platform: Platform, stored: build_output.BuildOutput | None
) -> contextlib.AbstractContextManager[Session]:
    """A session of the store whose transaction stores the build's log waiting (`stored`'s, if
    any) too: whoever sees what it records reads that log."""
    return platform.store.session() if stored is None else stored.session()


def _requeue(platform: Platform, build_id: str, stored: build_output.BuildOutput | None, why: str) -> None:
    """Queue the build again, its claim cleared, if it is still this platform's and building,
    with its log so far and a note of why (one transaction: the next attempt's log goes on after
    them, never over them); the claim it was taken by is not counted among its attempts (those
    count server stops)."""
    with _with_log(platform, stored) as s:
        moved = s.execute(
            update(BuildRow)
            .where(
                BuildRow.id == build_id,
                BuildRow.status == BuildStatus.BUILDING.value,
                BuildRow.claimed_by == platform.instance,
            )
            .values(
                status=BuildStatus.QUEUED.value,
                claimed_by=None,
                step=0,
                step_text="",
                worker_pid=None,
                attempts=BuildRow.attempts - 1,
            )
        )
        if getattr(moved, "rowcount", 0):
            build_output.note(
                s, build_id, f"\nThe store refused to record this build ({why}); it was queued again.\n"
            )
    platform.wake_builds.set()


def _writes(platform: Platform) -> refusals.Writes:
    return kept(platform, "_unsettled_builds", lambda: refusals.Writes("build", log))


def _build(
    platform: Platform,
    job: _Job,
    out: Callable[[str], None],
    stored: build_output.BuildOutput,
    stopping: threading.Event,
) -> None:
    validation = dockerfile.validate(job.text)
    if not validation.ok:
        raise OrchError("The Dockerfile no longer validates.", "Create the environment again.")
    # With a registry, a base image another machine pushed is pulled rather than built here.
    digests = base_digests.known(platform.store) if platform.config.registry else {}
    bases = base_images.ensure(
        platform.engine,
        platform.config,
        lambda line: out(build_log.base_step(line)),
        ["code-interpreter"],
        digests=digests,
    )
    base = bases["code-interpreter"]
    private = build_requests.private_to(validation, job.scope)
    key = cache_key(dockerfile.normalised(validation.instructions), base.id, private)
    cache_owner = dockerfile.cache_owner(platform.instance, job.scope)
    containerfile = dockerfile.render_containerfile(
        validation.instructions, base_images.image_tag("code-interpreter"), cache_owner
    )
    tag = images.environment_tag(platform, key, job.build_id)
    with platform.store.session() as s:
        b = s.get(BuildRow, job.build_id)
        if b is None:
            raise _Gone
        b.cache_key, b.containerfile = key, containerfile
    request = BuildRequest(
        containerfile=containerfile,
        tag=tag,
        labels={**platform.labels, "org.orch.kind": "environment", "org.orch.cache-key": key},
        mounts=ca_mounts(platform.config),
        build_args=proxy_env(platform.config),
        no_cache=job.no_cache,
        timeout=float(platform.config.build_timeout),
        owner=platform.instance,
        max_size=int(platform.config.build_max_size),
        disk_reserve=int(platform.config.build_disk_reserve),
        memory=int(platform.config.build_memory),
        pids=int(platform.config.build_pids),
    )
    # The log and the progress number the steps as the user's Dockerfile does; Podman's own
    # numbers count the rendered Containerfile and the LABEL steps that --label adds. The
    # progress's text (which a failed step's error quotes) is the user's instruction as written,
    # not the one Podman ran (a cache mount's rewritten id, a SHELL's shell applied).
    numbers = build_log.StepNumbers.of(job.text, validation.instructions)

    progress = refusals.Outage(f"build {job.build_id}: recording its progress", log, "the build goes on")
    looking = refusals.Outage(f"build {job.build_id}: asking whether it goes on", log, "the build goes on")

    def out_with_progress(line: str) -> None:
        line, step = numbers.rewrite(line)
        out(line)
        if step:
            _progress(platform, job.build_id, step[0], numbers.total, step[1], progress)

    # The cache mounts' directories it uses are kept until it ends; then the platform's are
    # brought within their size again (builder/cache_dirs.py).
    mounted = cache_mounts.ids(validation.instructions, cache_owner)
    try:
        with cache_dirs.Use(platform.config.home, mounted):
            info = platform.engine.build(
                request,
                out_with_progress,
                lambda pid: _set_pid(platform, job.build_id, pid),
                should_stop=lambda: stopping.is_set() or not _still_building(platform, job.build_id, looking),
            )
    except BuildFailed as e:
        if not _still_building(platform, job.build_id):
            raise _Gone from None
        if e.details.get("stopped") and stopping.is_set():
            raise _Interrupted from None
        unread = numbers.unread(e.details.get("tail") or [], containerfile)
        if unread is not None:
            # Its progress names that instruction, not the step before it (whose STEP line was
            # Podman's last: it prints none for one it can't read).
            at = numbers.numbers[numbers.lines.index(unread[0])]
            _progress(platform, job.build_id, at, numbers.total, unread[1], progress)
            raise _unread_error(*unread) from None
        raise
    finally:
        if mounted:
            _evict_cache_mounts(platform)
    if _too_large(platform, info.size):
        _release(platform, tag)
        raise _size_error(platform, info.size)
    # A failed push keeps the image (nothing names it: the next start removes it), so that a
    # build again only pushes it.
    digest = _push(platform, job.name, tag, out)
    platform.present_base_tags.add(tag)  # a cluster node holds it now (services/nodes.py)
    try:
        # Ready, with its whole log stored in the same transaction: whoever sees it ended reads all.
        with stored.session() as s:
            b = s.get(BuildRow, job.build_id)
            env = s.get(EnvironmentRow, job.env_id)
            if b is None or env is None:
                raise _Gone
            b.status, b.image, b.size_bytes = advance(b.status, BuildStatus.READY), tag, info.size
            b.image_digest = digest
            b.finished_at, b.worker_pid, b.step = utcnow(), None, b.total_steps
            # Only this environment moves to the new image: others that ran the image it ran
            # before (a cache hit on it, in any workspace) keep theirs, which goes once none does.
            moves = env.build_id == job.build_id
            unnamed = (env.image if env.image != tag else None) if moves else tag
            if moves:
                env.image, env.image_digest = tag, digest
    except _Gone:
        _release(platform, tag)  # its environment was deleted meanwhile: nothing names it
        raise
    if unnamed:
        _release(platform, unnamed)


def _still_building(platform: Platform, build_id: str, asking: refusals.Outage | None = None) -> bool:
    """Whether the build's row still says it is building: gone (its environment deleted) or
    settled by someone else, the build is stopped (asked about once a second while it runs). A
    store that refuses to say (`asking` says it once) is no stop: the next look asks again."""

    def look() -> bool:
        with platform.store.session() as s:
            return s.scalar(select(BuildRow.status).where(BuildRow.id == build_id)) == BuildStatus.BUILDING

    return look() if asking is None else asking.ask(look, True)


def _release(platform: Platform, image: str) -> None:
    try:
        images.release(platform, image)
    except OrchError as e:  # storage only: the next start's sweep removes what stays
        log.warning("removing %s: %s", image, e)


def _too_large(platform: Platform, size: int) -> bool:
    limit = int(platform.config.build_max_size)
    return bool(limit) and size > limit


def _size_error(platform: Platform, size: int) -> OrchError:
    """Why a build whose image is larger than ORCH_BUILD_MAX_SIZE failed (its image removed)."""
    limit = int(platform.config.build_max_size)
    return OrchError(
        f"The image is {format_apart(size, limit)}, more than the {format_size(limit)} that "
        "ORCH_BUILD_MAX_SIZE allows, so it was not kept.",
        "Make the image smaller (install only what runs need, and remove caches and "
        "downloads in the step that made them), or ask the server's operator to raise "
        "ORCH_BUILD_MAX_SIZE.",
        built=True,
    )


def _unread_error(line: int, text: str, why: str) -> BuildFailed:
    """Why a build failed whose instruction on `line` Podman could not read (`Error: resolving
    step`): no step's command failed, and the step before it is not to blame. Validation refuses
    the `${...}` forms that do this (dockerfile/substitutions.py), but an environment created
    before it did still builds its own Dockerfile."""
    shown = text if len(text) <= 80 else text[:80] + "..."
    why = why if len(why) <= 200 else why[:200] + "..."  # Podman quotes the whole word
    if "in substitution" in why:
        fix = (
            "Podman substitutes only ${VAR}, ${VAR:-default} and ${VAR:+alt}: write one of those "
            "there, or set the value in a RUN step"
        )
    else:
        fix = "Change that instruction so that Podman can read it"
    return BuildFailed(
        f"{environments.UNREAD} {line} of the Dockerfile ({shown}): {why}",
        f"{fix}; then delete the environment and create it again with the Dockerfile fixed (an "
        "agent's own Dockerfile: fix it and publish again with --docker).",
        unread=True,  # no step failed: no failed_step (the progress names this instruction)
    )


def _push(platform: Platform, name: str, tag: str, out: Callable[[str], None]) -> str | None:
    """Push the built image to the registry, if one is set, and return its digest reference. A
    failed push fails the build: the image is here, but no other machine could run it, and a
    build that says "ready" would only fail later, on another machine, far from the cause. (A
    build again reuses the layers: only the push is done again.)"""
    try:
        return registry.push_built(platform.engine, platform.config, tag, out)
    except EngineError as e:
        raise EngineError(
            f"The image was built but not pushed to the registry, so other machines cannot use it: "
            f"{e.message}",
            f"{e.fix} Then `orch env build {name}` pushes it again (its steps are cached, only "
            "the push runs again).".strip(),
            built=True,  # after every step succeeded
        ) from None


def _set_pid(platform: Platform, build_id: str, pid: int) -> None:
    with platform.store.session() as s:
        s.execute(update(BuildRow).where(BuildRow.id == build_id).values(worker_pid=pid))


def _progress(
    platform: Platform, build_id: str, step: int, total: int, text: str, asking: refusals.Outage
) -> None:
    """Record the step the build is at; a store that refuses it (`asking` says it once) is
    skipped: the next step's progress says it again."""

    def write() -> None:
        with platform.store.session() as s:
            s.execute(
                update(BuildRow)
                .where(BuildRow.id == build_id)
                .values(step=step, total_steps=total, step_text=text[:500])
            )

    asking.ask(write, None)


def _fail(
    platform: Platform,
    stored: build_output.BuildOutput | None,
    error: OrchError,
    excerpt: list[str],
    build_id: str = "",
) -> None:
    """Fail the build, its log stored in the same transaction (`stored`: None before its log
    was opened, `build_id` then). Only a Dockerfile step whose command failed is the failed
    step; any other failure (a timeout, a push, the base image, an instruction Podman could not
    read) says in `error` what to do, with the fix of its own."""
    with _with_log(platform, stored) as s:
        b = s.get(BuildRow, stored.build_id if stored is not None else build_id)
        if b is None:
            return
        step = (
            f"step {b.step}/{b.total_steps}: {b.step_text}"
            if b.step and not error.details.get("built") and not error.details.get("unread")
            else None
        )
        code = error.details.get("exit_code") if isinstance(error, BuildFailed) else None
        if step and code not in (None, -signal.SIGKILL):
            b.failed_step, b.error = step, f"S{step[1:]} failed (exit code {code})"
        else:
            during = f", during {step}" if step else ""
            message = error.message.removesuffix(".")
            b.failed_step, b.error = None, f"{message}{during}. {error.fix}".strip()
        b.log_tail = "\n".join(excerpt)  # the failure's excerpt; `orch env logs` has the whole log
        b.status, b.finished_at, b.worker_pid = advance(b.status, BuildStatus.FAILED), utcnow(), None
