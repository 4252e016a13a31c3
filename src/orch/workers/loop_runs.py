"""Executing a managed-loop run (docs/loop.md): the platform calls the model, and every tool call
runs in the run's own sandbox, held open for the whole run (sandbox/held.py) with the bundle's
files in its working directory and its dependencies mounted, as a code agent's run would have.

The API key (the loop's `api_key_secret`) stays in the platform: it goes to the model's endpoint
and never into the sandbox. Every step is a run event (services/run_events.py), and a line of the
run's log, so `orch run` shows the conversation as it happens; the answer is the run's stdout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from orch import metrics
from orch.bundle.loop_manifest import LoopConfig
from orch.engine.base import ContainerSpec
from orch.errors import OrchError, RunFailed
from orch.loop import endpoints
from orch.loop.driver import run_loop
from orch.loop.outcome import Outcome
from orch.loop.providers import connect
from orch.loop.sandbox import HeldTools
from orch.loop.transcript import transcript_line
from orch.sandbox.held import Held
from orch.sandbox.launcher import Isolation
from orch.sandbox.layout import BUNDLE, WORKDIR
from orch.secret.mask import Mask
from orch.services import run_events
from orch.services.platform import Platform
from orch.services.run_output import MAX_OUTPUT


class Log(Protocol):
    def line(self, text: str) -> None: ...


def execute(
    platform: Platform,
    run_id: str,
    loop: LoopConfig,
    isolation: Isolation,
    spec: ContainerSpec,
    run_input: str,
    api_key: str | None,
    mask: Mask,
    timeout: float,
    should_stop: Callable[[], bool],
    log: Log,
) -> Outcome:
    """Hold the run's sandbox open, drive the loop in it, remove it; the loop's outcome. `mask`
    holds the key and the run's secret values: masked in everything the loop stores.

    The run's phases (docs/metrics.md) as a loop has them: `start`, the sandbox held open with
    the bundle's files in it (a cold start: a held sandbox is never a warm one); `run`, the loop,
    its model calls and tools; `exit`, the sandbox removed. `prepare` and `store` are the
    worker's, as for any run."""
    try:
        endpoints.check_allowed(loop.provider, loop.base_url, platform.config.model_endpoints)
    except OrchError as e:  # the setting changed since the agent was published
        raise RunFailed(e.message, e.fix) from None
    holder = platform.held.holder(isolation, platform.launchers.get(isolation))
    if holder is None:
        raise RunFailed(
            f"This server cannot hold a {isolation.value} sandbox open, which a loop's tools need.",
            "Run the server with its default launcher (runc or gVisor).",
        )
    measure = metrics.of(platform)
    with measure.timed("start"):
        held = holder.open(spec)
        measure.sandbox_started(warm=False)  # a held sandbox is started for its run, never warm
        try:
            _copy_bundle(held)
        except BaseException:
            held.remove()
            raise

    def emit(kind: str, data: Mapping[str, Any]) -> None:
        run_events.append(platform, run_id, kind, data)
        if text := transcript_line(kind, data):
            log.line(text)

    try:
        with measure.timed("run"):
            return run_loop(
                loop,
                connect(loop, api_key),
                HeldTools(held, should_stop=should_stop),
                run_input,
                emit,
                timeout=timeout,
                should_stop=should_stop,
                mask=mask,
                answer_limit=MAX_OUTPUT,  # the answer is the run's stdout: the same bound, the same cut
            )
    finally:
        with measure.timed("exit"):
            held.remove()


def _copy_bundle(held: Held) -> None:
    """The bundle's files, where a code agent's run finds them (sandbox/spec.py)."""
    copied = held.exec(["/bin/sh", "-c", f"cp -R {BUNDLE}/. {WORKDIR}/"], workdir=WORKDIR, timeout=60)
    if copied.exit_code != 0:
        raise RunFailed(
            f"The agent's files could not be copied into its sandbox (exit code {copied.exit_code}).",
            "Check that the environment's image has /bin/sh and cp, then run again.",
        )
