"""Build jobs: claim a queued build from the store, run it on the engine, record the outcome.

The queue is the `builds` table, so a restart loses nothing; `recover` settles builds that a
stopped server left in "building".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select, update

from orch import dockerfile, metrics
from orch.builder import base_images, registry
from orch.builder.cache import cache_key
from orch.builder.host import ca_mounts, proxy_env
from orch.engine.base import BuildRequest
from orch.errors import BuildFailed, EngineError, OrchError
from orch.models import BuildStatus, advance
from orch.services import base_digests, build_log, build_output, images
from orch.services.platform import Platform
from orch.store import queue
from orch.store.queue import left_by
from orch.store.schema import BuildRow, EnvironmentRow, utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a build interrupted by a server stop is tried once more, then failed


def claim(platform: Platform) -> str | None:
    """Move the oldest queued build to "building" and return its id (None: queue empty)."""
    also = {"node": platform.node} if platform.node else None
    return queue.claim(
        platform.store, BuildRow, BuildStatus.QUEUED, BuildStatus.BUILDING, platform.instance, also
    )


def recover(platform: Platform) -> list[str]:
    """At start: end podman builds a stopped server left running, and re-queue (or fail) them."""
    settled = []
    interrupted = select(BuildRow).where(
        BuildRow.status == BuildStatus.BUILDING.value, left_by(BuildRow, platform.instance)
    )
    with platform.store.session() as s:
        for b in s.scalars(interrupted):
            if b.worker_pid:
                _stop_orphan(b.worker_pid)
    # With them ended, and before any build of this platform starts (this runs before the build
    # workers and the deploy worker), what killed builds left behind goes: environments' and
    # services' alike.
    platform.engine.remove_build_leftovers(platform.instance)
    with platform.store.session() as s:
        for b in s.scalars(interrupted):
            note = "The server stopped during this build"
            if b.attempts < MAX_ATTEMPTS:
                b.status = advance(b.status, BuildStatus.QUEUED)
                b.step, b.step_text, b.worker_pid = 0, "", None
                build_output.note(s, b.id, f"\n{note}; it was queued again.\n")
            else:
                b.status, b.finished_at, b.worker_pid = advance(b.status, BuildStatus.FAILED), utcnow(), None
                b.error = f"{note} {b.attempts} times; it was not tried again."
                build_output.note(s, b.id, f"\n{b.error}\n")
                metrics.of(platform).build_finished("failed")
            settled.append(b.id)
    # Images that nothing names (failed builds' above included), while still nothing builds.
    images.remove_unnamed(platform)
    return settled


def _stop_orphan(pid: int) -> None:
    """Kill the process group of a podman build we started, if it is still that build."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if len(cmdline) > 1 and cmdline[0].endswith(b"podman") and cmdline[1] == b"build":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        # Gone (or a zombie of the dead server's, reparented) before its leftovers are removed.
        for _ in range(50):
            try:
                if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                    break
            except OSError:
                break
            time.sleep(0.1)


def run(platform: Platform, build_id: str) -> None:
    """Run one claimed build to its end; every outcome is recorded, none raises."""
    started = time.monotonic()
    with platform.store.session() as s:
        b = s.get(BuildRow, build_id)
        env = s.get(EnvironmentRow, b.environment_id) if b else None
        if b is None or env is None:  # deleted while queued
            if b is not None:
                b.status, b.error, b.finished_at = advance(b.status, BuildStatus.FAILED), "deleted", utcnow()
                metrics.of(platform).build_finished("failed", time.monotonic() - started)
            return
        text, no_cache, env_id = env.dockerfile or "", b.no_cache, env.id
    # Only this attempt's lines make the excerpt: an earlier one (before a server stop) failed
    # for other reasons.
    excerpt = build_log.Excerpt()
    stored = build_output.BuildOutput(platform, build_id)

    def out(line: str) -> None:
        excerpt.add(line)
        stored.line(line)

    outcome: metrics.BuildOutcome = "failed"
    try:
        _build(platform, build_id, env_id, text, no_cache, out, stored)
        outcome = "ready"
    except BuildFailed as e:
        _fail(platform, stored, e, excerpt.lines() or list(e.details.get("tail") or []))
    except OrchError as e:
        out(f"error: {e}")
        _fail(platform, stored, e, excerpt.lines())
    except Exception as e:  # a bug must fail the build, not kill the worker
        log.exception("build %s crashed", build_id)
        out(f"internal error: {e!r}")
        _fail(platform, stored, OrchError(f"Internal error: {e!r}"), excerpt.lines())
    finally:
        stored.close()
    metrics.of(platform).build_finished(outcome, time.monotonic() - started)


def _build(
    platform: Platform,
    build_id: str,
    env_id: str,
    text: str,
    no_cache: bool,
    out: Callable[[str], None],
    stored: build_output.BuildOutput,
) -> None:
    validation = dockerfile.validate(text)
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
    key = cache_key(dockerfile.normalised(validation.instructions), base.id)
    containerfile = dockerfile.render_containerfile(
        validation.instructions, base_images.image_tag("code-interpreter")
    )
    tag = images.environment_tag(platform, key)
    with platform.store.session() as s:
        b = s.get(BuildRow, build_id)
        assert b is not None
        b.cache_key, b.containerfile = key, containerfile
    request = BuildRequest(
        containerfile=containerfile,
        tag=tag,
        labels={**platform.labels, "org.orch.kind": "environment", "org.orch.cache-key": key},
        mounts=ca_mounts(platform.config),
        build_args=proxy_env(platform.config),
        no_cache=no_cache,
        timeout=float(platform.config.build_timeout),
        owner=platform.instance,
    )
    # The log and the progress number the steps as the user's Dockerfile does; Podman's own
    # numbers count the rendered Containerfile and the LABEL steps that --label adds.
    numbers = build_log.StepNumbers.of(text, validation.instructions)

    def out_with_progress(line: str) -> None:
        line, step = numbers.rewrite(line)
        out(line)
        if step:
            _progress(platform, build_id, step[0], numbers.total, step[1])

    info = platform.engine.build(request, out_with_progress, lambda pid: _set_pid(platform, build_id, pid))
    digest = _push(platform, tag, out)
    platform.present_base_tags.add(tag)  # a cluster node holds it now (services/nodes.py)
    # Ready, with its whole log stored in the same transaction: whoever sees it ended reads all.
    with stored.storing, platform.store.session() as s:
        stored.store(s)
        b = s.get(BuildRow, build_id)
        env = s.get(EnvironmentRow, env_id)
        assert b is not None
        b.status, b.image, b.size_bytes = advance(b.status, BuildStatus.READY), tag, info.size
        b.image_digest = digest
        b.finished_at, b.worker_pid, b.step = utcnow(), None, b.total_steps
        if env is not None and env.build_id == build_id:
            env.image, env.image_digest = tag, digest


def _push(platform: Platform, tag: str, out: Callable[[str], None]) -> str | None:
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
            e.fix,
        ) from None


def _set_pid(platform: Platform, build_id: str, pid: int) -> None:
    with platform.store.session() as s:
        s.execute(update(BuildRow).where(BuildRow.id == build_id).values(worker_pid=pid))


def _progress(platform: Platform, build_id: str, step: int, total: int, text: str) -> None:
    with platform.store.session() as s:
        s.execute(
            update(BuildRow)
            .where(BuildRow.id == build_id)
            .values(step=step, total_steps=total, step_text=text[:500])
        )


def _fail(platform: Platform, stored: build_output.BuildOutput, error: OrchError, excerpt: list[str]) -> None:
    """Fail the build, its log stored in the same transaction."""
    with stored.storing, platform.store.session() as s:
        stored.store(s)
        b = s.get(BuildRow, stored.build_id)
        if b is None:
            return
        failed_step = f"step {b.step}/{b.total_steps}: {b.step_text}" if b.step else None
        if isinstance(error, BuildFailed) and failed_step:
            code = error.details.get("exit_code")
            why = f" (exit code {code})" if code not in (None, -9) else f": {error.message}"
            b.error = f"S{failed_step[1:]} failed{why}"
        else:
            b.error = error.message
        b.failed_step = failed_step
        b.log_tail = "\n".join(excerpt)  # the failure's excerpt; `orch env logs` has the whole log
        b.status, b.finished_at, b.worker_pid = advance(b.status, BuildStatus.FAILED), utcnow(), None
