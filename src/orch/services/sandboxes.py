"""Sandboxes on demand (docs/sandboxes.md): a workspace holds a sandbox open and uses it step by
step, commands and files in and out, until it is removed: on request, when idle for its
timeout, at the end of its lifetime, or when the server that holds it stops or restarts.

A sandbox is a row (status, limits, times, the server that holds it: `owner`) and, on that
server, a held sandbox (sandbox/held.py) in `platform.held`. Only that server reaches it; on
another server sharing the database a command gets a sentence saying so, and a removal there is
carried out by the owner's reaper (`reap`), which also removes idle and expired sandboxes.
"""

from __future__ import annotations

import logging
import math
import posixpath
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from orch import metrics
from orch.builder import base_images, registry
from orch.builder.host import ca_mounts, proxy_env
from orch.builder.predefined import BASE_ENVIRONMENTS
from orch.bundle.resources import Resources
from orch.engine.base import ContainerSpec, Mount
from orch.engine.network import Network
from orch.errors import (
    CapacityReached,
    ClientGone,
    Conflict,
    EngineError,
    HostCheckFailed,
    InvalidInput,
    LimitReached,
    NotFound,
    OrchError,
)
from orch.kept import kept
from orch.models import (
    BuildStatus,
    EnvKind,
    SandboxStatus,
    advance,
    chosen_id,
    id_pattern,
    new_id,
    shown_name,
    sources,
)
from orch.sandbox.held import ExecResult, Held, Output
from orch.sandbox.launcher import Isolation
from orch.sandbox.layout import HOME, SANDBOX_USER
from orch.services import environments as envs
from orch.services.image_presence import still_here
from orch.services.platform import Platform
from orch.services.run_memory import Budget
from orch.sizes import format_size
from orch.store.db import Gone, hold
from orch.store.refusals import Outage
from orch.store.schema import BuildRow, EnvironmentRow, NodeRow, SandboxRow, WorkspaceRow, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = 600  # idle seconds before a sandbox is removed, unless the request says
DEFAULT_EXEC_TIMEOUT = 60.0  # seconds a command may take, unless the request says (or the lifetime is less)
MAX_EXECS = 16  # commands running at once in one sandbox, file calls included
FILE_TIMEOUT = 20.0  # seconds a file call's command may take (under a client's usual 30 s wait)
MAX_OUTPUT = 1024 * 1024  # bytes of each stream kept in a collected (not streamed) answer
MAX_STDIN = 1024 * 1024  # bytes of text a command may be given on stdin
MAX_PATH = 4096  # bytes of a path (Linux's PATH_MAX)
MAX_NAME = 255  # bytes of one component of a path (Linux's NAME_MAX), in UTF-8
MAX_COMMAND = 256 * 1024  # bytes of a command's argv and variables together
MAX_ARGUMENT = 128 * 1024 - 1  # bytes of one argument or NAME=value (Linux's MAX_ARG_STRLEN, its NUL out)
# How a caller asks for a sandbox's memory, whichever way it calls (the CLI, the API, the client).
MEMORY_OPTION = "--memory; `memory` in the API and the Python client"
MEMORY_WAIT = 30.0  # seconds a create waits in line for its memory (run_memory) before a 503
LIST_LIMIT = 500  # removed sandboxes listed at most (newest first)
OPEN = (SandboxStatus.STARTING.value, SandboxStatus.RUNNING.value)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NO_SANDBOX_FIX = "List your sandboxes with `orch sandbox list` (or GET /v1/sandboxes)."


class SandboxEnvironment(BaseModel):
    id: str
    name: str


class SandboxView(BaseModel):
    id: str
    status: str = Field(description="starting, running, removed or failed.")
    environment: SandboxEnvironment
    isolation: str = Field(description="runc or gvisor.")
    memory_bytes: int
    cpus: float
    network: bool = Field(description="Whether it reaches the internet (never the host).")
    timeout: int = Field(description="Idle seconds after which it is removed.")
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime | None = Field(
        description="When it is removed if left idle (or at the end of its lifetime); none once removed."
    )
    reason: str | None = Field(description="Why it was removed or failed.")
    node: str | None = Field(None, description="The cluster's node that holds it (none on one machine).")


class ExecView(BaseModel):
    exit_code: int = Field(description="The command's; 124 when it timed out, 127 when not found.")
    stdout: str
    stderr: str
    duration: float = Field(description="Seconds from its start to its end.")
    timed_out: bool = False
    truncated: bool = Field(False, description=f"Whether a stream had more than {MAX_OUTPUT} bytes (cut).")
    timeout: float | None = Field(
        None, description="The seconds it was given: the request's, else the default (or the lifetime)."
    )


class FileView(BaseModel):
    path: str = Field(description="The absolute path in the sandbox.")
    size: int


# ---- creating -------------------------------------------------------------------------------


def create(
    platform: Platform,
    ws_id: str,
    *,
    environment: str | None = None,
    memory: str | int | None = None,
    cpus: float | None = None,
    timeout: int | None = None,
    network: bool = False,
    gone: Callable[[], bool] = lambda: False,
    sandbox_id: str | None = None,
) -> SandboxView:
    """Start a sandbox and hold it open for the workspace; it answers commands at once.

    `sandbox_id`, when the caller chose it (`chosen_id`), is the sandbox's id: a caller whose
    create was cut short before it read the answer removes it by that id (DELETE), which it knew
    before the answer; one taken already (by any workspace) is refused, 409.

    `gone` says that the caller went away (its connection closed): nobody would learn the
    sandbox's id, so none is left. Checked after the image is there (before anything is stored),
    during the wait for memory (the row is deleted), and once it started (it is removed); each
    raises ClientGone. The route checks once more when the answer is ready (`abandon`)."""
    if sandbox_id is not None:
        chosen_id(sandbox_id, CHOSEN_ID, "sandbox")
    resources = limits(memory, cpus)
    idle = idle_timeout(platform, timeout)
    _within_budgets(platform, resources.memory_bytes)
    if resources.pids > platform.run_pids.total:  # no create could ever be given its processes
        raise InvalidInput(
            f"A sandbox may have {resources.pids:,} processes, more than the {platform.run_pids.total:,} "
            "that all sandboxes on this server may have at once (run_pids).",
            "Ask the server's operator to raise ORCH_RUN_PIDS (docs/configuration.md).",
        )
    isolation = Isolation(platform.config.isolation)
    holder = platform.held.holder(isolation, platform.launchers.get(isolation))
    if holder is None:
        raise EngineError(
            f"This server cannot hold sandboxes open: it has no {isolation.value} launcher.",
            "Start the server with `orch server`, which starts sandboxes through runc.",
        )
    if problem := platform.host_problem:
        said = problem.message[:1].lower() + problem.message[1:]
        raise HostCheckFailed(f"No sandbox can start on the server's machine: {said}", problem.fix)
    sandbox_id = sandbox_id or new_id("sbx")
    name = f"{platform.container_prefix}sb-{sandbox_id}"
    with platform.held.admission, platform.store.session() as s:
        ws = s.get(WorkspaceRow, ws_id)
        if ws is None:  # deleted since this request's token check (services/workspace_deletes.py)
            raise Gone()
        env = _environment(s, ws, environment)
        image = _image(platform, s, env, isolation)
        if gone():
            raise _client_gone()
        if s.get(SandboxRow, sandbox_id) is not None:  # a chosen id, used before
            raise Conflict(
                f"A sandbox with the id {sandbox_id} exists already.",
                "Choose another id (or leave it out: the server chooses one).",
            )
        # The workspace's limits are checked and its new sandbox stored in one step: `admission`
        # makes it one on this server, the workspace's row on every server sharing the store
        # (after _image, which may write in a session of its own).
        hold(s, WorkspaceRow, ws_id)
        held_open, held_memory = s.execute(
            select(func.count(), func.coalesce(func.sum(SandboxRow.memory_bytes), 0)).where(
                SandboxRow.workspace_id == ws_id, SandboxRow.status.in_(OPEN)
            )
        ).one()
        most = int(platform.config.max_sandboxes)
        if held_open >= most:
            raise LimitReached(
                f"This workspace already holds {held_open} sandbox{'es' if held_open != 1 else ''} "
                f"open, its limit ({most}).",
                "Remove one you no longer need (`orch sandbox rm ID`), then try again.",
            )
        share = int(platform.config.max_sandbox_memory)
        if held_memory + resources.memory_bytes > share:
            raise LimitReached(
                f"This workspace's open sandboxes hold {format_size(held_memory)} of memory, and this "
                f"one asks for {format_size(resources.memory_bytes)}: more than the "
                f"{format_size(share)} a workspace's sandboxes may hold at once (max_sandbox_memory).",
                "Remove one you no longer need (`orch sandbox rm ID`), or ask for less memory "
                f"({MEMORY_OPTION}), then try again.",
            )
        now = utcnow()
        s.add(
            SandboxRow(
                id=sandbox_id,
                workspace_id=ws_id,
                status=SandboxStatus.STARTING.value,
                environment_id=env.id,
                environment_name=env.name,
                isolation=isolation.value,
                image=image,
                memory_bytes=resources.memory_bytes,
                cpus=resources.cpus,
                pids=resources.pids,
                network=network,
                timeout=idle,
                container=name,
                owner=platform.instance,
                created_at=now,
                last_used_at=now,
                deadline=now + timedelta(seconds=int(platform.config.sandbox_lifetime)),
            )
        )
    _take_shares(platform, sandbox_id, resources, gone)
    try:  # from here on a failure gives the shares back and records the sandbox failed
        sandbox = holder.open(sandbox_spec(platform, sandbox_id, name, image, resources, network))
    except Exception as e:
        _give_back(platform, sandbox_id)
        if not isinstance(e, OrchError):  # a bug, not a sentence for the user: the log has it
            log.exception("sandbox %s could not start", sandbox_id)
        said = e.message if isinstance(e, OrchError) else type(e).__name__
        _settle(platform, sandbox_id, SandboxStatus.FAILED, f"it could not start: {_unsaid(said)}")
        raise
    platform.held.add(sandbox_id, sandbox)
    metrics.of(platform).sandbox_opened()
    if gone():
        abandon(platform, sandbox_id)
        raise _client_gone()
    if not _settle(platform, sandbox_id, SandboxStatus.RUNNING, None):
        _close(platform, sandbox_id, SandboxStatus.REMOVED, "removed while it started")
    return show(platform, ws_id, sandbox_id)


# A sandbox's id as the server makes it (models.new_id): what a caller may choose.
CHOSEN_ID = id_pattern("sbx")


# The reason of a sandbox whose create's caller went away before the answer.
ABANDONED = "its create was cancelled: the caller went away before the answer"


def abandon(platform: Platform, sandbox_id: str) -> None:
    """Remove a sandbox just created whose caller went away before the answer (so it never
    learned the id): nobody would use it, and it would hold a place and memory until idle."""
    _close(platform, sandbox_id, SandboxStatus.REMOVED, ABANDONED)


def _client_gone() -> ClientGone:
    return ClientGone("The caller went away before the answer: no sandbox was left.", "")


def _unsaid(message: str) -> str:
    """A start's error as a failed sandbox's reason, which says "it could not start" already."""
    return message.removeprefix("The sandbox could not start: ")


def _within_budgets(platform: Platform, need: int) -> None:
    """A sandbox larger than the server's whole budget, or than a workspace's share, can never
    start: 400, before anything is stored."""
    budget, share = platform.run_memory.total, int(platform.config.max_sandbox_memory)
    if need > budget:
        raise InvalidInput(
            f"This sandbox asks for {format_size(need)} of memory, more than the "
            f"{format_size(budget)} that all sandboxes on this server may have at once (run_memory).",
            f"Ask for at most {format_size(min(budget, share))} ({MEMORY_OPTION}).",
        )
    if need > share:
        raise InvalidInput(
            f"This sandbox asks for {format_size(need)} of memory, more than the "
            f"{format_size(share)} that a workspace's sandboxes may hold at once (max_sandbox_memory).",
            f"Ask for at most {format_size(share)} ({MEMORY_OPTION}).",
        )


def _take_shares(platform: Platform, sandbox_id: str, resources: Resources, gone: Callable[[], bool]) -> None:
    """Hold the sandbox's memory limit and process limit in the server's budgets (`run_memory`,
    `run_pids`, which runs share) until it is removed, waiting in the runs' lines for up to
    MEMORY_WAIT seconds in all. When they are not given by then, its row is deleted (the create
    changed nothing) and the answer is 503; so it is when the caller goes away meanwhile (`gone`)."""
    deadline = time.monotonic() + MEMORY_WAIT
    stop = lambda: time.monotonic() >= deadline or platform.stopping.is_set() or gone()  # noqa: E731
    memory, pids = platform.run_memory, platform.run_pids
    need = resources.memory_bytes
    gave_up = platform.budgets.hold(sandbox_id, need, resources.pids, stop, lambda _budget, _in_use: None)
    if gave_up is None:
        return
    if gave_up == "processes":
        less = ""
        short = (
            f"The server's sandboxes may have {pids.used:,} of the {pids.total:,} processes they may "
            f"have at once (run_pids), and this sandbox's limit is {resources.pids:,}{_ahead(pids)}"
        )
    else:
        less = f", or ask for less memory ({MEMORY_OPTION})"
        short = (
            f"The server's sandboxes hold {format_size(memory.used)} of the {format_size(memory.total)} "
            f"of memory they may have at once (run_memory), and this sandbox asks for {format_size(need)}"
            f"{_ahead(memory)}"
        )
    with platform.store.session() as s:
        s.execute(delete(SandboxRow).where(SandboxRow.id == sandbox_id))
    if gone():
        raise _client_gone()
    raise CapacityReached(
        f"{short}; none was given back within {MEMORY_WAIT:g} s.",
        "Try again when runs or sandboxes have ended (`orch sandbox rm ID` removes one you no "
        f"longer need){less}.",
    )


def _ahead(budget: Budget) -> str:
    """The runs and creates that wait in the budget's line, which a create does not overtake."""
    n = budget.waiting
    return "" if n == 0 else f", behind {n} waiting for theirs" if n > 1 else ", behind 1 waiting for its own"


def _give_back(platform: Platform, sandbox_id: str) -> None:
    """Give back the sandbox's shares of the budgets (nothing if it holds none)."""
    platform.budgets.release(sandbox_id)


def limits(memory: str | int | None, cpus: float | None) -> Resources:
    """The sandbox's limits, read as orch.yaml's `resources:` reads them (defaults the same)."""
    given = {k: v for k, v in (("memory", memory), ("cpus", cpus)) if v is not None}
    try:
        return Resources.model_validate(given)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "limits"
        ctx = first.get("ctx") or {}
        message = str(ctx.get("message") or f"{first['msg']}.")
        raise InvalidInput(f"{field}: {message}", str(ctx.get("fix") or "Check the value.")) from None


def idle_timeout(platform: Platform, timeout: int | None) -> int:
    most = int(platform.config.sandbox_max_timeout)
    if timeout is None:
        return min(DEFAULT_TIMEOUT, most)
    if not 1 <= timeout <= most:
        raise InvalidInput(
            f"An idle timeout of {timeout} seconds is out of range.", f"Use 1 to {most} seconds."
        )
    return timeout


def _environment(s: Session, ws: WorkspaceRow, ref: str | None) -> EnvironmentRow:
    """As for a run: the environment named, else the workspace's default, else Python's base."""
    if ref:
        return envs.resolve(s, ws, ref)
    if ws.default_environment_id and (found := s.get(EnvironmentRow, ws.default_environment_id)):
        return found
    base = s.scalar(
        select(EnvironmentRow).where(EnvironmentRow.scope == envs.SHARED, EnvironmentRow.name == "python")
    )
    assert base is not None, "the base environments are seeded at start"
    return base


def _image(platform: Platform, s: Session, env: EnvironmentRow, isolation: Isolation) -> str:
    """The environment's image, which must be ready now: a sandbox does not wait for a build.
    One removed from the machine since this server last found it is built or pulled again."""
    if env.kind == EnvKind.BASE.value:
        tag = base_images.image_tag(BASE_ENVIRONMENTS[env.name][0])
        if not still_here(platform, isolation, tag):
            base_images.ensure(platform.engine, platform.config, log.info, [BASE_ENVIRONMENTS[env.name][0]])
            platform.present_base_tags.add(tag)
        return tag
    build = s.get(BuildRow, env.build_id) if env.build_id else None
    if env.image:  # an earlier build's, ready: a rebuild under way or failed does not take it away
        if not still_here(platform, isolation, env.image):  # built elsewhere, or removed: pulled
            registry.ensure_image(platform.engine, platform.config, env.image, env.image_digest)
            platform.present_base_tags.add(env.image)
        return env.image
    progress = f"`orch env status {env.name}` shows its progress"
    if env.kind == EnvKind.PREDEFINED.value and build is None:
        with platform.store.session() as own:  # committed, though this request is refused
            if (first := own.get(EnvironmentRow, env.id)) is not None:
                envs.ensure_built(platform, own, first)
        raise Conflict(
            f"The environment {env.name} is being built for its first use.",
            f"Create the sandbox again once it is ready ({progress}).",
        )
    if build is None or build.status == BuildStatus.FAILED.value:
        why = build.error if build is not None else "it was never built"
        at_step = build is not None and envs.dockerfile_at_fault(build)
        raise Conflict(
            f"The environment {env.name} has no image: its build failed ({why}).",
            envs.failed_build_fix(env.name, env.kind, at_step=at_step),
        )
    raise Conflict(
        f"The environment {env.name} is still building.",
        f"Create the sandbox again once it is ready ({progress}).",
    )


def sandbox_spec(
    platform: Platform, sandbox_id: str, name: str, image: str, resources: Resources, network: bool
) -> ContainerSpec:
    """What a held sandbox is: a run's sandbox (user, limits, CA bundle, proxy variables, its
    own root on a sized tmpfs) whose working directory is /home/user."""
    return ContainerSpec(
        image=image,
        argv=[],
        name=name,
        labels={**platform.labels, "org.orch.kind": "sandbox", "org.orch.sandbox": sandbox_id},
        env={**proxy_env(platform.config), "HOME": HOME},
        workdir=HOME,
        user=SANDBOX_USER,
        mounts=[Mount(h, c) for h, c in ca_mounts(platform.config).items()],
        network=Network.SANDBOX if network else Network.NONE,
        memory_bytes=resources.memory_bytes,
        cpus=resources.cpus,
        pids=resources.pids,
        read_only=False,
    )


# ---- reading --------------------------------------------------------------------------------


def _view(row: SandboxRow, nodes: dict[str, str]) -> SandboxView:
    still_open = not SandboxStatus(row.status).final
    expires = min(row.last_used_at + timedelta(seconds=row.timeout), row.deadline) if still_open else None
    return SandboxView(
        id=row.id,
        status=row.status,
        environment=SandboxEnvironment(id=row.environment_id, name=row.environment_name),
        isolation=row.isolation,
        memory_bytes=row.memory_bytes,
        cpus=row.cpus,
        network=row.network,
        timeout=row.timeout,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=expires,
        reason=row.reason,
        node=nodes.get(row.owner),
    )


def _nodes(s: Session, rows: Sequence[SandboxRow]) -> dict[str, str]:
    """The ids of the cluster's nodes that hold `rows` (by their platforms' instances)."""
    owners = {r.owner for r in rows}
    if not owners:
        return {}
    found = s.execute(select(NodeRow.instance, NodeRow.id).where(NodeRow.instance.in_(owners)))
    return {instance: node_id for instance, node_id in found}


def _row(platform: Platform, ws_id: str, sandbox_id: str) -> SandboxRow:
    with platform.store.session() as s:
        row = s.get(SandboxRow, sandbox_id)
        if row is None or row.workspace_id != ws_id:
            raise NotFound(f"No sandbox {shown_name(sandbox_id)!r} in this workspace.", _NO_SANDBOX_FIX)
        s.expunge(row)
        return row


def show(platform: Platform, ws_id: str, sandbox_id: str) -> SandboxView:
    row = _row(platform, ws_id, sandbox_id)
    with platform.store.session() as s:
        return _view(row, _nodes(s, [row]))


def list_sandboxes(platform: Platform, ws_id: str, include_removed: bool = False) -> list[SandboxView]:
    """The workspace's open sandboxes (with `include_removed`, the ended ones too), newest first."""
    query = select(SandboxRow).where(SandboxRow.workspace_id == ws_id)
    if not include_removed:
        query = query.where(SandboxRow.status.in_(OPEN))
    with platform.store.session() as s:
        rows = s.scalars(query.order_by(SandboxRow.created_at.desc()).limit(LIST_LIMIT)).all()
        held_by = _nodes(s, rows)
        return [_view(r, held_by) for r in rows]


# ---- using ----------------------------------------------------------------------------------


def _held(platform: Platform, ws_id: str, sandbox_id: str) -> tuple[SandboxRow, Held]:
    """The sandbox, open and held by this server, ready for a command."""
    row = _row(platform, ws_id, sandbox_id)
    if row.status != SandboxStatus.RUNNING.value:
        said = f" ({row.reason})" if row.reason else ""
        state = "has failed" if row.status == SandboxStatus.FAILED.value else f"is {row.status}"
        raise Conflict(
            f"The sandbox {sandbox_id} {state}{said}: it takes no more commands or files.",
            "Create another with `orch sandbox create`.",
        )
    sandbox = platform.held.get(sandbox_id)
    if sandbox is None:
        raise Conflict(
            f"The sandbox {sandbox_id} is held by another orch server on this database.",
            "Send the request to the server that created it.",
        )
    return row, sandbox


def path_in_sandbox(path: str, what: str = "The path") -> str:
    """An absolute path in the sandbox: `path` as given when absolute, else under /home/user."""
    if not path:
        raise InvalidInput(f"{what} is empty.", "Give an absolute path, or one relative to /home/user.")
    if "\x00" in path:
        raise InvalidInput(f"{what} holds a NUL character, which no path can.", "Remove it.")
    if len(path.encode()) > MAX_PATH:
        raise InvalidInput(f"{what} is longer than {MAX_PATH} bytes.", "Give a shorter path.")
    for part in path.split("/"):
        _name_size(part, f"A name in {what[:1].lower()}{what[1:]}")
    return path if path.startswith("/") else posixpath.join(HOME, path)


def _name_size(name: str, what: str) -> None:
    """InvalidInput when `name`, one path component, is longer than Linux takes: MAX_NAME bytes,
    counted in UTF-8 (128 characters of 'é' are 256 bytes), before anything is sent."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME:
        raise InvalidInput(
            f"{what} is {size:,} bytes long ({len(name):,} characters); Linux takes at most {MAX_NAME} "
            "bytes in one file name.",
            "Give a shorter name (a character outside ASCII takes 2 to 4 bytes).",
        )


def _claim(sandbox: Held) -> None:
    """Take one of the sandbox's MAX_EXECS places (checked and counted in one step), which the
    caller gives back (`sandbox.release()`) when its command or file call ends."""
    if not sandbox.claim(MAX_EXECS):
        raise LimitReached(
            f"The sandbox is running {MAX_EXECS} commands already (file calls included), the most "
            "it runs at once.",
            "Wait for one to end, then try again.",
        )


def _never() -> bool:
    return False


@dataclass
class Exec:
    """A command checked and bound to its sandbox; `admit` takes its place among the sandbox's
    MAX_EXECS (429 when none is left), `run` runs it (in the caller's thread), and `release`
    gives the place back once it ended."""

    platform: Platform
    sandbox_id: str
    sandbox: Held
    argv: list[str]
    env: dict[str, str]
    workdir: str
    stdin: bytes
    timeout: float

    def admit(self) -> None:
        _claim(self.sandbox)

    def release(self) -> None:
        self.sandbox.release()

    def run(self, on_stdout: Output, on_stderr: Output, should_stop: Callable[[], bool]) -> ExecResult:
        """Run the command to its end; `should_stop` (the client went away), or the server
        beginning to stop (it removes its sandboxes next), kills it. A sandbox removed, or
        whose init exited, while it ran ends it with Conflict saying so, not with the kill's
        exit code."""
        stopping = self.platform.stopping
        _touch(self.platform, self.sandbox_id)
        try:
            result = self.sandbox.exec(
                self.argv,
                env=self.env,
                workdir=self.workdir,
                stdin=self.stdin,
                timeout=self.timeout,
                on_stdout=on_stdout,
                on_stderr=on_stderr,
                should_stop=lambda: should_stop() or stopping.is_set(),
            )
        except EngineError:
            _still_held(self.platform, self.sandbox_id, self.sandbox, _RAN)
            if not self.sandbox.alive():
                _close(self.platform, self.sandbox_id, SandboxStatus.FAILED, _DIED)
                raise Conflict(
                    f"The sandbox {self.sandbox_id} stopped running; it was marked failed.",
                    "Create another with `orch sandbox create`.",
                ) from None
            raise
        finally:
            _touch(self.platform, self.sandbox_id)
        if result.exit_code == KILLED:  # killed: its sandbox may be ending under it
            seen_ended(self.sandbox)
        _ended_under(self.platform, self.sandbox_id, self.sandbox, _RAN)
        if result.cancelled and stopping.is_set() and not should_stop():
            raise _server_stopped(self.sandbox_id, _RAN)
        return result


_RAN = "the command ran"
KILLED = 128 + 9  # a command's exit code when SIGKILL ended it
# How long a killed command's sandbox is given to be seen ended: under gVisor the command's
# answer can come before the sandbox's process has exited after its init did (on a loaded
# machine, the sandbox was still alive when the command had ended, and its death went unsaid).
SETTLE_SECONDS = 2.0


def seen_ended(sandbox: Held) -> None:
    """Wait, up to SETTLE_SECONDS, for a sandbox that may be ending to be seen not alive."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while sandbox.alive() and time.monotonic() < deadline:
        time.sleep(0.05)


def _there(during: str) -> str:
    """What to do again in another sandbox, after the sandbox ended while `during`."""
    return "run the command there" if during == _RAN else "copy the file there"


def _server_stopped(sandbox_id: str, during: str) -> Conflict:
    """The server's stop killed the command, and removes the sandbox next: said, not the kill's
    137 (or the file call's stop)."""
    return Conflict(
        f"The sandbox {sandbox_id} was removed while {during} (the server stopped).",
        f"Start the server again, create another sandbox with `orch sandbox create`, and {_there(during)}.",
    )


def _ended_under(platform: Platform, sandbox_id: str, sandbox: Held, during: str) -> None:
    """Conflict when the sandbox ended while `during` ("the command ran"): its init exited (the
    kernel killed the command: its 137 is no exit of its own), which is recorded here at once
    rather than at the reaper's next look; or it was removed."""
    if platform.held.get(sandbox_id) is sandbox and not sandbox.alive():
        _close(platform, sandbox_id, SandboxStatus.FAILED, _DIED)
    _still_held(platform, sandbox_id, sandbox, during)


def _still_held(platform: Platform, sandbox_id: str, sandbox: Held, during: str) -> None:
    """Conflict when the sandbox was ended while `during` (removed on request, the server
    stopping, its init dying): `_close` recorded why before it tore it down."""
    if platform.held.get(sandbox_id) is sandbox:
        return
    with platform.store.session() as s:
        row = s.get(SandboxRow, sandbox_id)
        status, reason = (row.status, row.reason) if row is not None else (None, None)
    said = f" ({reason})" if reason else ""
    if status == SandboxStatus.FAILED.value:
        raise Conflict(
            f"The sandbox {sandbox_id} stopped running while {during}{said}; it was marked failed.",
            "Create another with `orch sandbox create`.",
        )
    raise Conflict(
        f"The sandbox {sandbox_id} was removed while {during}{said}.",
        f"Create another with `orch sandbox create`, and {_there(during)}.",
    )


# A command may have killed its init, or (under gVisor) used up the memory its kernel needs.
_DIED = "it stopped by itself: its init process (under gVisor, its kernel) ended"


def start_exec(
    platform: Platform,
    ws_id: str,
    sandbox_id: str,
    command: Sequence[str],
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    stdin: str | None = None,
) -> Exec:
    """Check a command and find its sandbox; every refusal happens here (but the limit of
    commands at once, `Exec.admit`), before it runs."""
    if not command or not command[0]:
        raise InvalidInput("The command is empty.", "Give the program to run and its arguments.")
    env = dict(env or {})
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise InvalidInput(
                f"The environment variable name {shown_name(key)!r} is not usable.",
                "Use letters, digits and '_', not starting with a digit.",
            )
        if "\x00" in value:
            raise InvalidInput(
                f"The environment variable {shown_name(key)} holds a NUL character.", "Remove it."
            )
    if any("\x00" in arg for arg in command):
        raise InvalidInput("The command holds a NUL character, which no argument can carry.", "Remove it.")
    size = sum(len(a.encode()) + 1 for a in command) + sum(
        len(k) + len(v.encode()) + 2 for k, v in env.items()
    )
    if size > MAX_COMMAND:
        raise InvalidInput(
            f"The command and its variables are {size} bytes; the limit is {MAX_COMMAND}.",
            "Pass large data on stdin or in a file (`orch sandbox cp`).",
        )
    for i, arg in enumerate(command, 1):
        if len(arg.encode()) > MAX_ARGUMENT:
            raise InvalidInput(
                f"Argument {i} of the command is {len(arg.encode()):,} bytes; Linux takes at most "
                f"{MAX_ARGUMENT:,} in one argument.",
                "Pass large data on stdin or in a file (`orch sandbox cp`).",
            )
    for key, value in env.items():
        if (whole := len(key) + 1 + len(value.encode())) > MAX_ARGUMENT:
            raise InvalidInput(
                f"The environment variable {shown_name(key)} is {whole:,} bytes as NAME=value; Linux "
                f"takes at most {MAX_ARGUMENT:,} in one variable (NAME=value).",
                "Pass large data on stdin or in a file (`orch sandbox cp`).",
            )
    data = (stdin or "").encode()
    if len(data) > MAX_STDIN:
        raise InvalidInput(
            f"The standard input is {len(data)} bytes; the limit is {MAX_STDIN}.",
            "Write large data to a file first (`orch sandbox cp`), and read it from there.",
        )
    most = float(platform.config.sandbox_lifetime)
    if timeout is None:
        seconds = min(DEFAULT_EXEC_TIMEOUT, most)  # a sandbox lives no longer
    elif math.isfinite(timeout) and 0 < timeout <= most:
        seconds = timeout
    else:
        raise InvalidInput(
            f"A timeout of {timeout:g} seconds is out of range.",
            f"Use more than 0 and at most {most:g} (the sandbox's lifetime).",
        )
    cwd = path_in_sandbox(workdir, "The working directory") if workdir is not None else HOME
    _row, sandbox = _held(platform, ws_id, sandbox_id)
    return Exec(platform, sandbox_id, sandbox, list(command), env, cwd, data, seconds)


class Capped:
    """Output kept up to MAX_OUTPUT bytes; the rest is counted, not kept. `take(size)` is asked
    for the room of each part kept; once it says no, nothing more is kept (`refused`)."""

    def __init__(self, take: Callable[[int], bool] = lambda size: True) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.take = take
        self.refused = False

    def __call__(self, data: bytes) -> None:
        room = MAX_OUTPUT - self.size
        if room > 0 and not self.refused:
            part = data[:room]
            if self.take(len(part)):
                self.parts.append(part)
            else:
                self.refused = True
        self.size += len(data)

    @property
    def cut(self) -> bool:
        return self.size > MAX_OUTPUT

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", "replace")


def collected(result: ExecResult, out: Capped, err: Capped, timeout: float | None = None) -> ExecView:
    return ExecView(
        exit_code=result.exit_code,
        stdout=out.text(),
        stderr=err.text(),
        duration=round(result.duration, 6),
        timed_out=result.timed_out,
        truncated=out.cut or err.cut,
        timeout=timeout,
    )


def write_file(
    platform: Platform,
    ws_id: str,
    sandbox_id: str,
    path: str,
    data: bytes,
    name: str | None = None,
    should_stop: Callable[[], bool] = _never,
) -> FileView:
    """Write `data` at `path`; a directory there (or a path ending in /) takes it as `name`
    inside it, as `cp` does, and without a name is refused. See `_file_call` for its bound."""
    target = path_in_sandbox(path)
    file_name(name)
    most = int(platform.config.sandbox_file_limit)
    if len(data) > most:
        raise too_large(most)
    _row, sandbox = _held(platform, ws_id, sandbox_id)

    def write(stop: Callable[[], bool]) -> str:
        return sandbox.write_file(target, data, name, timeout=FILE_TIMEOUT, should_stop=stop)

    written = _file_call(platform, sandbox_id, sandbox, "the file was written", write, should_stop)
    return FileView(path=written, size=len(data))


def file_name(name: str | None) -> None:
    """A file's own name (`name` of a write): one path component."""
    if name is None:
        return
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise InvalidInput(
            f"The file name {name!r} is not usable: it names no file in a directory.",
            "Give a name without '/' or NUL, other than '.' and '..' (or leave it out).",
        )
    _name_size(name, "The file name")


def too_large(most: int) -> InvalidInput:
    return InvalidInput(
        f"The file is larger than the {format_size(most)} a sandbox takes in one call.",
        "Send it in parts or compressed (the server's setting sandbox_file_limit sets the limit).",
    )


def read_file(
    platform: Platform,
    ws_id: str,
    sandbox_id: str,
    path: str,
    should_stop: Callable[[], bool] = _never,
    take: Callable[[int], bool] | None = None,
) -> bytes:
    """The bytes of the regular file at `path`, each part read once `take` gave room for it (see
    Held.read_file). See `_file_call` for its bound."""
    target = path_in_sandbox(path)
    _row, sandbox = _held(platform, ws_id, sandbox_id)
    most = int(platform.config.sandbox_file_limit)

    def read(stop: Callable[[], bool]) -> bytes:
        return sandbox.read_file(target, most, timeout=FILE_TIMEOUT, should_stop=stop, take=take)

    return _file_call(platform, sandbox_id, sandbox, "the file was read", read, should_stop)


def _file_call(
    platform: Platform,
    sandbox_id: str,
    sandbox: Held,
    during: str,
    call: Callable[[Callable[[], bool]], T],
    should_stop: Callable[[], bool],
) -> T:
    """Run a file call's command as a command is run: in one of the sandbox's MAX_EXECS places
    (429 when none is left), for at most FILE_TIMEOUT seconds (then a sentence), stopped when
    `should_stop` (its caller went away: ClientGone) or the server stops; a sandbox that ended
    under it is said (Conflict), as for a command. Each counts as use at its start and end."""
    _claim(sandbox)
    stopping = platform.stopping
    try:
        _touch(platform, sandbox_id)
        try:
            return call(lambda: should_stop() or stopping.is_set())
        except (EngineError, InvalidInput, ClientGone) as e:
            _ended_under(platform, sandbox_id, sandbox, during)
            if isinstance(e, ClientGone) and stopping.is_set() and not should_stop():
                raise _server_stopped(sandbox_id, during) from None
            raise
        finally:
            _touch(platform, sandbox_id)
    finally:
        sandbox.release()


def _touches(platform: Platform) -> Outage:
    """The platform's "last used" bumps of commands and file calls, which a refusing store does
    not fail: said once while it refuses."""
    return kept(
        platform,
        "_sandbox_touches",
        lambda: Outage(
            "recording a sandbox's last use",
            log,
            "its commands and file calls go on, and its idle timeout counts from the last use recorded",
        ),
    )


def _touch(platform: Platform, sandbox_id: str) -> None:
    """Record a use of the sandbox (`last_used_at`, from which its idle timeout counts): the
    server's bookkeeping, not the caller's request. A store that refuses it (full, busy, not
    answering: errors.store_refused) fails neither a command that ran nor a read; it is said
    once in the log while it lasts (`Outage`), and the timeout counts from the previous use
    recorded. Found by a tester: on a full disk a command ran, then its answer was a bug's 500."""

    def write() -> None:
        with platform.store.session() as s:
            s.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id, SandboxRow.status == SandboxStatus.RUNNING.value)
                .values(last_used_at=utcnow())
            )

    _touches(platform).ask(write, None)


# ---- ending ---------------------------------------------------------------------------------


def remove(platform: Platform, ws_id: str, sandbox_id: str) -> None:
    """Remove a sandbox now (one already ended stays as it is). Held by another server, it is
    marked removed here and torn down by that server's reaper within a second."""
    row = _row(platform, ws_id, sandbox_id)
    if SandboxStatus(row.status).final:
        return
    _close(platform, sandbox_id, SandboxStatus.REMOVED, "removed on request")


def _settle(platform: Platform, sandbox_id: str, status: SandboxStatus, reason: str | None) -> bool:
    """Move the row to `status` if it may go there from where it is; whether it moved."""
    values: dict[str, object] = {"status": status.value, "reason": reason}
    if status.final:
        values["removed_at"] = utcnow()
    with platform.store.session() as s:
        moved = s.execute(  # type: ignore[attr-defined]  # an UPDATE's result has rowcount
            update(SandboxRow)
            .where(SandboxRow.id == sandbox_id, SandboxRow.status.in_([x.value for x in sources(status)]))
            .values(**values)
        ).rowcount
    return bool(moved)


def _close(platform: Platform, sandbox_id: str, status: SandboxStatus, reason: str) -> None:
    """Record the sandbox's end, then remove what this server holds of it."""
    _settle(platform, sandbox_id, status, reason)
    sandbox = platform.held.pop(sandbox_id)
    if sandbox is None:
        return
    _give_back(platform, sandbox_id)
    metrics.of(platform).sandbox_closed()
    if problems := sandbox.remove():
        log.warning("%s", problems)


def reap(platform: Platform) -> list[str]:
    """Remove what this server holds that should go: sandboxes idle past their timeout, past
    their lifetime, whose init exited, or whose row another server ended. Return their ids."""
    held = platform.held.ids()
    if not held:
        return []
    with platform.store.session() as s:
        rows = {r.id: r for r in s.scalars(select(SandboxRow).where(SandboxRow.id.in_(held)))}
        for r in rows.values():
            s.expunge(r)
    now = utcnow()
    ended = []
    for sandbox_id in held:
        sandbox, row = platform.held.get(sandbox_id), rows.get(sandbox_id)
        if sandbox is None:
            continue
        why: tuple[SandboxStatus, str] | None = None
        if row is None or SandboxStatus(row.status).final:
            why = (SandboxStatus.REMOVED, "removed on request")  # by another server
        elif row.status != SandboxStatus.RUNNING.value:
            continue  # still starting
        elif not sandbox.alive():
            why = (SandboxStatus.FAILED, _DIED)
        elif now >= row.deadline:
            lifetime = round((row.deadline - row.created_at).total_seconds())
            why = (SandboxStatus.REMOVED, f"it reached the end of its lifetime ({lifetime} s)")
        elif not sandbox.busy and now - row.last_used_at >= timedelta(seconds=row.timeout):
            why = (SandboxStatus.REMOVED, f"idle for {row.timeout} s")
        if why is not None:
            _close(platform, sandbox_id, *why)
            ended.append(sandbox_id)
    return ended


def close_all(platform: Platform, reason: str) -> int:
    """Remove every sandbox this server holds (it stops); return how many."""
    held = platform.held.ids()
    for sandbox_id in held:
        _close(platform, sandbox_id, SandboxStatus.REMOVED, reason)
    return len(held)


def recover(platform: Platform) -> int:
    """At start: this server's sandboxes of before its restart are gone (the launchers' sweep
    removed what they left on the host); their rows say so. Return how many."""
    with platform.store.session() as s:
        left = list(
            s.scalars(
                select(SandboxRow).where(SandboxRow.owner == platform.instance, SandboxRow.status.in_(OPEN))
            )
        )
        for row in left:
            row.status = advance(row.status, SandboxStatus.REMOVED).value
            row.reason, row.removed_at = "the server restarted", utcnow()
    if left:
        noun = "sandbox" if len(left) == 1 else "sandboxes"
        log.info("removed %d %s on demand that this server held before it restarted", len(left), noun)
    return len(left)
