"""Run use cases: start a run of an agent's latest version, list, show, read logs, cancel."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from orch import metrics
from orch.errors import Conflict, InvalidInput, NotFound
from orch.models import RunStatus, advance, chosen_id, id_pattern, new_id, shown_name
from orch.services import log_files, nodes, run_output
from orch.services.agents import latest_version, resolve_agent
from orch.services.platform import Platform
from orch.services.run_output import STREAMS
from orch.services.views import RunEnvironment, RunLogs, RunUsage, RunView
from orch.store.schema import AgentRow, AgentVersionRow, RunEventRow, RunRow, utcnow

# The input is also the sandbox's ORCH_INPUT, and Linux holds at most 128 KiB in one string of a
# program's environment ("ORCH_INPUT=" and its end included: MAX_ARG_STRLEN); a larger one would
# be accepted here, then fail the run with "Argument list too long". The same bound holds for
# each `env` variable, and all of them together with the input stay within MAX_ENVIRONMENT.
MAX_VARIABLE = 128 * 1024 - 1
MAX_INPUT = MAX_VARIABLE - len("ORCH_INPUT=")
MAX_ENVIRONMENT = 1024 * 1024
# A follower of a run's output wakes for that run's changes; it looks at the store again every
# FOLLOW_RECHECK seconds all the same (another server on the same database may run it).
FOLLOW_RECHECK = 2.0
FOLLOW_POLL = 0.5  # at most this long between a follower's looks at a server stop
# How long the platform's notes alone wait for the agent's output or the run's end before they
# are answered (docs/client.md).
NOTE_LINGER = 0.5
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
T = TypeVar("T")


def create(
    platform: Platform,
    ws_id: str,
    agent_ref: str,
    input: str = "",
    env: dict[str, str] | None = None,
    timeout: int | None = None,
    run_id: str | None = None,
) -> RunView:
    """Queue a run of the agent's latest version; a worker picks it up at once when one is free.

    `run_id`, when the caller chose it (`chosen_id`), is the run's id: a caller whose create was
    cut short before it read the answer cancels the run by that id, which it knew before the
    answer; one taken already (by any workspace's run) is refused, 409."""
    if run_id is not None:
        chosen_id(run_id, CHOSEN_ID, "run")
    env = env or {}
    for key in env:
        if not _ENV_NAME.match(key) or key.startswith("ORCH_"):
            raise InvalidInput(
                f"The environment variable name {shown_name(key)!r} is not usable.",
                "Use letters, digits and '_', not starting with a digit or ORCH_ (reserved).",
            )
        if len(f"{key}={env[key]}".encode()) > MAX_VARIABLE:
            raise InvalidInput(
                f"The environment variable {shown_name(key)} is {len(env[key].encode()):,} bytes, more "
                f"than one variable can hold ({MAX_VARIABLE - len(key) - 1:,} with its name).",
                "Pass large data as the run's input or let the agent download it.",
            )
        if "\x00" in env[key]:
            raise InvalidInput(
                f"The environment variable {shown_name(key)} holds a NUL character, which no environment "
                "variable can carry.",
                "Pass text without NUL characters (encode binary data, e.g. as base64).",
            )
    if len(input.encode()) > MAX_INPUT:
        raise InvalidInput(
            f"The input is {len(input.encode()):,} bytes; the limit is {MAX_INPUT:,} (128 KiB, what "
            "the agent's ORCH_INPUT variable can hold).",
            "Pass a smaller input, or let the agent download large data itself.",
        )
    if len(input.encode()) + sum(len(f"{k}={v}".encode()) for k, v in env.items()) > MAX_ENVIRONMENT:
        raise InvalidInput(
            "The input and the environment variables are more than 1 MiB together.",
            "Pass less, or let the agent download large data itself.",
        )
    if "\x00" in input:
        # The agent gets its input in ORCH_INPUT too, and no environment variable can hold NUL;
        # PostgreSQL, the store, refuses it in text as well.
        raise InvalidInput(
            "The input holds a NUL character, which a run's input cannot carry.",
            "Pass text without NUL characters (encode binary data, e.g. as base64).",
        )
    if timeout is not None and not 1 <= timeout <= 86400:
        raise InvalidInput(f"A timeout of {timeout} seconds is out of range.", "Use 1 to 86400 seconds.")
    # A chosen id taken already breaks the runs' primary key at the insert, which is the check
    # (no look first: two creates with one id race to it, and the loser is told the same).
    taken = None if run_id is None else _taken(run_id)
    run_id = run_id or new_id("run")
    with platform.store.session(clash=taken) as s:
        agent = resolve_agent(s, ws_id, agent_ref)
        version = latest_version(s, agent)
        values = {
            "id": run_id,
            "workspace_id": ws_id,
            "agent_id": agent.id,
            "agent_version_id": version.id,
            "status": RunStatus.QUEUED.value,
            "input": input,
            "env": json.dumps(env),
            "timeout": timeout,
            "deps": "none",
            "queued_at": utcnow(),
        }
        # A plain INSERT on the session's connection, not the ORM's unit of work (its flush was
        # ~5% of the server's GIL-held time in a burst of runs). The view is of the same values.
        s.connection().execute(_NEW_RUN, values)
        # The version is looked at again now that this transaction writes: on SQLite the reads
        # above ran before it began, and a delete of the agent (or the version) may have
        # committed since, which would leave this run queued for nothing (it found no unfinished
        # run to refuse for). From the insert on, a delete waits for this run, then sees it and
        # is refused. (On PostgreSQL latest_version's key-share lock already holds the version.)
        if s.connection().execute(_VERSION_KEPT, {"version_id": version.id}).first() is None:
            raise NotFound(
                f"{agent.name} v{version.version} was deleted just now.",
                "See `orch agents list` for what is left, then try again.",
            )
        if not platform.runs_work and nodes.none_up(s):  # a cluster's server: nodes run runs
            run_output.note(s, run_id, nodes.NO_NODE)
        view = _view(RunRow(**values), agent, version)
    platform.wake_runs.set()
    return view


_NEW_RUN = insert(RunRow)

# A run's id as the server makes it (models.new_id): what a caller may choose.
CHOSEN_ID = id_pattern("run")


def _taken(run_id: str) -> Conflict:
    """The answer to a chosen id that a run of any workspace has already: run ids are one
    namespace, server-wide (docs/workspaces.md)."""
    return Conflict(
        f"A run with the id {run_id} exists already.",
        "Choose another id (or leave it out: the server chooses one).",
    )


_VERSION_KEPT = select(AgentVersionRow.id).where(AgentVersionRow.id == bindparam("version_id"))

# The statements of a status look (the API's commonest call), built once.
_MODEL_CALLS = select(RunEventRow.run_id, RunEventRow.data).where(
    RunEventRow.run_id.in_(bindparam("run_ids", expanding=True)), RunEventRow.type == "model_call"
)
_RUN_IN = (
    select(RunRow, AgentRow, AgentVersionRow)
    .join(AgentRow, AgentRow.id == RunRow.agent_id)
    .join(AgentVersionRow, AgentVersionRow.id == RunRow.agent_version_id)
    .where(RunRow.id == bindparam("run_id"), RunRow.workspace_id == bindparam("ws_id"))
)


def _usage(s: Session, run_ids: list[str]) -> dict[str, RunUsage]:
    """The model usage of the managed-loop runs among `run_ids` (the sums of their model_call
    events, services/run_events.py), in one query; runs without events have none."""
    found: dict[str, RunUsage] = {}
    rows = s.execute(_MODEL_CALLS, {"run_ids": run_ids})
    for run_id, data in rows:
        event = json.loads(data)
        usage = found.setdefault(run_id, RunUsage())
        usage.input_tokens += int(event.get("input_tokens") or 0)
        usage.output_tokens += int(event.get("output_tokens") or 0)
        usage.model_calls += 1
    return found


def _view(run: RunRow, agent: AgentRow, version: AgentVersionRow, usage: RunUsage | None = None) -> RunView:
    duration = (
        (run.finished_at - run.started_at).total_seconds() if run.started_at and run.finished_at else None
    )
    return RunView(
        id=run.id,
        agent=agent.name,
        agent_version=version.version,
        status=run.status,
        exit_code=run.exit_code,
        reason=run.reason,
        environment=RunEnvironment(id=run.environment_id, name=run.environment_name),
        environment_rule=run.environment_rule,
        isolation=run.isolation,
        node=run.node,
        deps=run.deps,
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration=duration,
        usage=usage,
        truncated=bool(run.truncated),
    )


def _get(platform: Platform, ws_id: str, run_id: str) -> tuple[RunRow, AgentRow, AgentVersionRow]:
    with platform.store.session() as s:
        return _get_in(s, ws_id, run_id)


def _no_run(run_id: str) -> NotFound:
    return NotFound(
        f"No run {shown_name(run_id)!r} in this workspace.", "See `orch runs list` for their ids."
    )


def _get_in(s: Session, ws_id: str, run_id: str) -> tuple[RunRow, AgentRow, AgentVersionRow]:
    # One query, the run with its agent and version: status looks are the API's commonest call.
    found = s.execute(_RUN_IN, {"run_id": run_id, "ws_id": ws_id}).first()
    if found is None:
        raise _no_run(run_id)
    run, agent, version = found
    return run, agent, version


def show(platform: Platform, ws_id: str, run_id: str, usage: bool = True) -> RunView:
    """The run; with its model usage (a loop's) unless `usage` is False (a status look)."""
    with platform.store.session() as s:
        run, agent, version = _get_in(s, ws_id, run_id)
        return _view(run, agent, version, _usage(s, [run_id]).get(run_id) if usage else None)


def list_runs(
    platform: Platform,
    ws_id: str,
    agent_ref: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[RunView]:
    """Runs, newest first; `before` (a run's id): only those queued before it, the next page
    after a page's last run (ties in time are ordered by id, so no run is on two pages)."""
    # One query, with each run's agent and version joined: not two more per run listed.
    query = (
        select(RunRow, AgentRow, AgentVersionRow)
        .join(AgentRow, AgentRow.id == RunRow.agent_id)
        .join(AgentVersionRow, AgentVersionRow.id == RunRow.agent_version_id)
        .where(RunRow.workspace_id == ws_id)
    )
    with platform.store.session() as s:
        if agent_ref:
            query = query.where(RunRow.agent_id == resolve_agent(s, ws_id, agent_ref).id)
        if before is not None:
            last, _agent, _version = _get_in(s, ws_id, before)
            query = query.where(
                or_(
                    RunRow.queued_at < last.queued_at,
                    and_(RunRow.queued_at == last.queued_at, RunRow.id < last.id),
                )
            )
        newest_first = (RunRow.queued_at.desc(), RunRow.id.desc())
        rows = s.execute(query.order_by(*newest_first).limit(max(1, min(limit, 500)))).all()
        usage = _usage(s, [run.id for run, _, _ in rows])
        return [_view(run, agent, version, usage.get(run.id)) for run, agent, version in rows]


def cancel(platform: Platform, ws_id: str, run_id: str) -> RunView:
    """Cancel a queued run at once, or ask its worker to stop a started one."""
    run, _agent, _version = _get(platform, ws_id, run_id)
    if RunStatus(run.status).final:
        raise Conflict(f"Run {run_id} has already ended ({run.status}).", "Nothing to cancel.")
    with platform.store.session() as s:
        s.execute(update(RunRow).where(RunRow.id == run_id).values(cancel_requested=True))
        ended = s.execute(  # type: ignore[attr-defined]  # an UPDATE's result has rowcount
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.status == RunStatus.QUEUED.value)
            .values(
                status=advance(RunStatus.QUEUED, RunStatus.CANCELLED).value,
                reason="cancelled before it started",
                finished_at=utcnow(),
            )
        ).rowcount
    if ended:
        metrics.of(platform).run_finished(RunStatus.CANCELLED)
    platform.notify_runs(run_id)
    return show(platform, ws_id, run_id)


async def follow_logs(
    platform: Platform, ws_id: str, run_id: str, offsets: dict[str, int], wait: float
) -> RunLogs:
    """Output from the given byte offsets; with `wait`, wait until there is some or the run ends
    (at most `wait` seconds; only this run's changes wake the reader). The reads run in the
    thread pool, but the wait holds no thread, so any number of followers (`orch run` long-polls
    with wait=10) leave the pool to the rest of the API."""
    return await long_poll(platform, run_id, wait, lambda: _logs(platform, ws_id, run_id, offsets), _news)


async def long_poll(
    platform: Platform, run_id: str, wait: float, read: Callable[[], T], news: Callable[[T], float | None]
) -> T:
    """`read()` (in the thread pool) until `news` says to answer, the server stops, or `wait`
    seconds (at most 30) pass; only the run's own changes wake the reader (its output, its end,
    its events: services/run_events.py). `news(found)` is None while there is nothing to answer,
    0 to answer at once, or how many seconds the answer may wait for more to go with it."""
    deadline = time.monotonic() + max(0.0, min(wait, 30.0))
    # A change wakes this reader at once: the notifying thread (a worker writing output or
    # ending the run) sets an event of this loop's. The pauses only bound how late a server
    # stop is seen.
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(changed.set)

    with platform.following(run_id, wake) as changes:
        while True:
            changed.clear()
            seen = changes()
            found = await anyio.to_thread.run_sync(read)
            hold = news(found)
            if hold is not None:  # the wait ends at the latest `hold` after the first news
                deadline = min(deadline, time.monotonic() + hold)
            if platform.stopping.is_set() or (left := deadline - time.monotonic()) <= 0:
                return found
            recheck = time.monotonic() + min(left, FOLLOW_RECHECK)
            while (
                changes() == seen
                and not platform.stopping.is_set()
                and (pause := recheck - time.monotonic()) > 0
            ):
                with anyio.move_on_after(min(pause, FOLLOW_POLL)):
                    await changed.wait()
                changed.clear()


def _news(logs: RunLogs) -> float | None:
    # The platform's notes alone ("→ environment ...") wait a moment for the agent's output or
    # the run's end to go with them: a short run's follower gets one answer, not two.
    if logs.stdout or logs.stderr or RunStatus(logs.status).final:
        return 0.0
    return NOTE_LINGER if logs.log else None


_LOG_STATUS = select(RunRow.status, RunRow.truncated).where(
    RunRow.id == bindparam("run_id"), RunRow.workspace_id == bindparam("ws_id")
)


def _logs(platform: Platform, ws_id: str, run_id: str, offsets: dict[str, int]) -> RunLogs:
    # One transaction, and only the two columns a follower needs (a long poll reads this at
    # each change). The status is read before the output: a run's end stores its last output
    # in the transaction that ends it, so an ended status means the output read is whole.
    # Both statements are built once, and run on a plain connection (no ORM session).
    with platform.store.db.connect() as conn:
        found = conn.execute(_LOG_STATUS, {"run_id": run_id, "ws_id": ws_id}).first()
        if found is None:
            raise _no_run(run_id)
        status, truncated = found[0], bool(found[1])
        chunks = run_output.read(conn, run_id, offsets)
    ended = RunStatus(status).final
    if not ended:
        chunks = {name: log_files.whole_characters(chunk) for name, chunk in chunks.items()}
    new_offsets = {name: offsets.get(name, 0) + len(chunks[name]) for name in STREAMS}
    return RunLogs(
        **{name: chunks[name].decode("utf-8", "replace") for name in STREAMS},
        offsets=new_offsets,
        status=status,
        truncated=truncated,
        run=show(platform, ws_id, run_id) if ended else None,
    )
