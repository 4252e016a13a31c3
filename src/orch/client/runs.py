"""Runs: start them, follow their output (`orch.client.follow`), wait for their end
(`client.runs`, `Run`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orch.client.follow import FINAL, STREAMS, event_pages, follow
from orch.client.records import AGENTS, EnvironmentRef, Resource, when
from orch.client.transport import (
    Transport,
    as_dict,
    check_json,
    listed,
    seconds,
    segment,
    text_name,
    whole,
)
from orch.errors import InvalidInput

RUNS = "orch runs list"  # what lists runs' ids, for the fix of an empty one


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
            last = follow(self._http, self.id, self._add, self._offsets, deadline=deadline)
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
        if not wait:
            return [event for page in event_pages(self._http, self.id, after) for event in page]
        params = {"after": after, "wait": wait}
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


def _fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": data["id"],
        "agent": data["agent"],
        "agent_version": data["agent_version"],
        "status": data["status"],
        "exit_code": data.get("exit_code"),
        "reason": data.get("reason"),
        "environment": EnvironmentRef._from_api(data.get("environment")),
        "environment_rule": data.get("environment_rule"),
        "isolation": data.get("isolation"),
        "node": data.get("node"),
        "deps": data.get("deps", "none"),
        "queued_at": when(data.get("queued_at")),
        "started_at": when(data.get("started_at")),
        "finished_at": when(data.get("finished_at")),
        "duration": data.get("duration"),
        "usage": data.get("usage"),
        "truncated": bool(data.get("truncated")),
    }


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
        wall-clock limit in seconds (default: the agent's manifest's)."""
        text_name(agent, "agent", AGENTS, needed=True)
        body = {
            "agent": agent,
            "input": input_text(input),
            "env": as_dict(env, "env") or {},
            "timeout": timeout,
        }
        return Run._from_api(self._http.post("/v1/runs", json=body), self._http)

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
