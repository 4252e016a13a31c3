"""Runs: start them, follow their output (`orch.client.follow`), wait for their end
(`client.runs`, `Run`)."""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orch.client.follow import FINAL, STREAMS, event_pages, follow
from orch.client.records import (
    AGENTS,
    EnvironmentRef,
    Resource,
    number,
    part,
    text,
    truth,
    when,
    whole_number,
)
from orch.client.sandboxes import CANCEL_TIMEOUT, ID_ALPHABET
from orch.client.transport import (
    LONGEST_POLL,
    Transport,
    as_dict,
    check_json,
    kind_of,
    listed,
    python_number,
    seconds,
    segment,
    text_name,
    whole,
    whole_seconds,
)
from orch.errors import Conflict, InvalidInput, NotFound, OrchError, ServerUnreachable

RUNS = "orch runs list"  # what lists runs' ids, for the fix of an empty one
USAGE = ("input_tokens", "output_tokens", "model_calls")  # a managed loop's, in `Run.usage`


def input_text(value: Any) -> str:
    """A run's input as the API takes it: text as given (bytes as UTF-8 text), None as nothing,
    anything else as JSON; what is none of these is refused before any request."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise InvalidInput(
                "The input is bytes that are not UTF-8 text.", "Pass text, or encode binary data (base64)."
            ) from None
    if isinstance(value, str):
        return value
    check_json(value, "input")  # NaN, a type JSON lacks, text that is not UTF-8: InvalidInput
    return json.dumps(value)


@dataclass(eq=False)
class Run:
    """One run of an agent. `wait()` follows it to its end; `stdout` and `stderr` are its output
    so far (all of it once it has ended), read from the server when asked for."""

    id: str
    agent: str
    agent_version: int
    status: str  # queued, starting, running, succeeded, failed, timed_out or cancelled
    exit_code: int | None
    reason: str | None  # why it failed, timed out or was cancelled
    environment: EnvironmentRef
    environment_rule: str | None  # dockerfile, pinned, workspace-default or base
    isolation: str | None  # runc or gvisor
    node: str | None  # the cluster node that took it; None on one machine
    deps: str  # none, installed or cached
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    usage: dict[str, int] | None  # a managed loop's {input_tokens, output_tokens, model_calls}
    truncated: bool  # its stdout or stderr was cut at the 1 MiB the server keeps per stream
    _http: Transport = field(repr=False)
    _offsets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0), repr=False)
    _output: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in STREAMS}, repr=False)
    _complete: bool = field(default=False, repr=False)

    @classmethod
    def _from_api(cls, data: Mapping[str, Any], http: Transport) -> Run:
        return cls(**_fields(data), _http=http)

    def _update(self, data: Mapping[str, Any]) -> None:
        for name, value in _fields(data).items():
            setattr(self, name, value)

    @property
    def ended(self) -> bool:
        return self.status in FINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def stdout(self) -> str:
        """What the agent wrote to stdout so far (all of it once the run has ended)."""
        self._read()
        return "".join(self._output["stdout"])

    @property
    def stderr(self) -> str:
        self._read()
        return "".join(self._output["stderr"])

    @property
    def log(self) -> str:
        """The platform's notes on the run (environment chosen, dependencies, how it ended)."""
        self._read()
        return "".join(self._output["log"])

    def wait(self, timeout: float | None = None) -> Run:
        """Follow the run until it has ended (and its output is read); returns the run. Raises
        TimeoutError when `timeout` seconds pass first (the run goes on)."""
        deadline = None if timeout is None else time.monotonic() + seconds(timeout, "The wait's timeout")
        if not self._complete:
            try:
                last = follow(self._http, self.id, self._add, self._offsets, deadline=deadline)
            except ServerUnreachable as e:
                if deadline is None or time.monotonic() < deadline:
                    raise
                # A server that stopped answering held the last poll past the wait's timeout
                # (at most the client's limit for one request): the wait's own end, as documented.
                raise TimeoutError(
                    f"Run {self.id} has not ended after {timeout} s (the server did not answer: {e.message})"
                ) from e
            if last["status"] not in FINAL:
                raise TimeoutError(f"Run {self.id} has not ended after {timeout} s (it is {last['status']}).")
            self._complete = True
            if last.get("run"):  # the answer that saw the end carries the run (older servers: no)
                self._update(last["run"])
                return self
        self.refresh()
        return self

    def refresh(self) -> Run:
        """Read the run's status again."""
        self._update(self._http.get(f"/v1/runs/{segment(self.id, RUNS)}"))
        return self

    def events(self, after: int = 0, wait: float = 0) -> list[dict[str, Any]]:
        """A managed loop's events after `after` (`seq`), oldest first: `{seq, type, at, ...}`
        (docs/loop.md): all of them, however many answers of the API (1000 events each) that
        takes. With `wait`, the first answer that has some, waiting up to that many seconds for
        one unless the run ended (pass its last `seq` back as `after` for the next)."""
        waited = python_number(wait)  # numpy's numbers too
        if waited is None or not math.isfinite(waited):  # NaN is true, and would reach the server
            shown = kind_of(wait) if waited is None else str(waited)
            raise InvalidInput(
                f"`wait` is {shown}, which is no number of seconds to wait.",
                f"Pass wait as the seconds to wait for an event, up to {LONGEST_POLL:g} (0: no wait).",
            )
        if not waited:
            return [event for page in event_pages(self._http, self.id, after) for event in page]
        params = {"after": after, "wait": waited}
        events: list[dict[str, Any]] = listed(
            self._http.get(f"/v1/runs/{segment(self.id, RUNS)}/events", params=params)
        )
        return events

    def cancel(self) -> Run:
        """Cancel the run: at once if queued, else its sandbox is stopped (`wait()` sees the end)."""
        self._update(self._http.post(f"/v1/runs/{segment(self.id, RUNS)}/cancel"))
        return self

    def _read(self) -> None:
        """Read what output is there now, without waiting."""
        if not self._complete:
            last = follow(self._http, self.id, self._add, self._offsets, wait=0)
            self._complete = last["status"] in FINAL
            if last.get("run"):
                self._update(last["run"])

    def _add(self, stream: str, text: str) -> None:
        self._output[stream].append(text)


def new_run_id() -> str:
    """A run id as the server makes them (orch.models.new_id, CHOSEN_ID of services/runs.py),
    chosen by the client: run_ and 10 of 0-9 and a-z without i, l, o, u."""
    return "run_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(10))


def _fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": text(data, "id"),
        "agent": text(data, "agent"),
        "agent_version": whole_number(data, "agent_version"),
        "status": text(data, "status"),
        "exit_code": whole_number(data, "exit_code", null=True),
        "reason": text(data, "reason", null=True),
        "environment": EnvironmentRef._of(data),
        "environment_rule": text(data, "environment_rule", null=True),
        "isolation": text(data, "isolation", null=True),
        "node": text(data, "node", null=True),
        "deps": text(data, "deps", "none"),
        "queued_at": when(data, "queued_at"),
        "started_at": when(data, "started_at"),
        "finished_at": when(data, "finished_at"),
        "duration": number(data, "duration", null=True),
        "usage": _usage(data),
        "truncated": truth(data, "truncated", False),
    }


def _usage(data: Mapping[str, Any]) -> dict[str, int] | None:
    """A run's `usage`: a managed loop's sums of USAGE (None: not a loop run)."""
    usage = part(data, "usage")
    return None if usage is None else {key: whole_number(usage, key, 0) for key in USAGE}


class Runs(Resource):
    """`client.runs`: run agents in fresh sandboxes."""

    def create(
        self,
        agent: str,
        input: Any = "",
        env: Mapping[str, str] | None = None,
        timeout: int | None = None,
    ) -> Run:
        """Start a run of the agent's latest version (by name or id) and return it at once;
        `run.wait()` follows it. `input` (text as given; a dict or list is sent as JSON) reaches
        the agent on stdin and in ORCH_INPUT; `env` adds environment variables; `timeout` is a
        wall-clock limit in seconds (default: the agent's manifest's). A create cut short before
        its answer was read (KeyboardInterrupt, ServerUnreachable) cancels the run it may have
        queued, by the id chosen here, before the exception goes on (a note says what became of
        it)."""
        text_name(agent, "agent", AGENTS, needed=True)
        # The id is chosen here, so that a create cut short (Ctrl-C, a connection broken or timed
        # out before its answer was read) can be undone by it: the server may have queued the
        # run, and its answer, the only other place the id is said, was never read.
        run_id = new_run_id()
        body = {
            "agent": agent,
            "input": input_text(input),
            "env": as_dict(env, "env") or {},
            "timeout": whole_seconds(timeout, "timeout", 120),  # 120.0 is 120
            "id": run_id,
        }
        try:
            created = self._http.post("/v1/runs", json=body)
        except (KeyboardInterrupt, ServerUnreachable) as cut:
            if isinstance(cut, ServerUnreachable) and cut.never_sent:
                raise  # no connection was made: nothing was queued, nothing to cancel
            self._cancel(run_id, cut)
            raise
        return Run._from_api(created, self._http)

    def _cancel(self, run_id: str, cut: BaseException) -> None:
        """Undo a create cut short before its answer was read: cancel the run by the id this
        client chose, whether the server made it or not (404: it did not). Best effort, within
        CANCEL_TIMEOUT: what became of it is a note on `cut`, the exception that goes on."""
        try:
            self._http.post(f"/v1/runs/{run_id}/cancel", timeout=self._http.waiting(CANCEL_TIMEOUT))
        except NotFound:
            cut.add_note(f"The create was cancelled; no run was left (its id would have been {run_id}).")
        except Conflict:  # the server's answer for a run that has ended
            cut.add_note(
                f"The create was cut short after the run it made ({run_id}) had already ended: "
                f"client.runs.get({run_id!r}) has it."
            )
        except OrchError as e:
            cut.add_note(
                f"The create was cut short, and the run it may have made ({run_id}) could not be "
                f"cancelled: {e.message} If `orch runs list` shows it, cancel it with "
                f"client.runs.get({run_id!r}).cancel()."
            )
        else:
            cut.add_note(f"The create was cancelled; the run it had queued ({run_id}) was cancelled.")

    def get(self, run_id: str) -> Run:
        return Run._from_api(self._http.get(f"/v1/runs/{segment(run_id, RUNS, numbers=False)}"), self._http)

    def list(self, agent: str | None = None, limit: int = 50, before: str | None = None) -> list[Run]:
        """Runs, newest first (`agent`: only this agent's, by name or id; `limit`: at most 500;
        `before`: a run's id, for the runs queued before it: the next page after its page)."""
        text_name(agent, "agent", AGENTS)  # "" is no agent, not every agent
        text_name(before, "before", RUNS)
        params: dict[str, Any] = {"limit": whole(limit, "limit")}
        if agent is not None:
            params["agent"] = agent
        if before is not None:
            params["before"] = before
        return [Run._from_api(r, self._http) for r in listed(self._http.get("/v1/runs", params=params))]
