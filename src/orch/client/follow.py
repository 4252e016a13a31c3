"""`follow`: the one reader of a run's output, for `Run` and for `orch run` alike. It long-polls
GET /v1/runs/{id}/logs from byte offsets, so a follower sees output as it comes and learns of
the run's end within the same request. `event_pages`: the one reader of a managed loop's events,
for `Run.events` and `orch runs events`. A module of its own, so that `orch run` loads neither
the client's records nor its dataclasses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from orch.client.transport import Transport, as_json_text, listed, not_understood, segment
from orch.errors import ServerUnreachable

FINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
STREAMS = ("log", "stdout", "stderr")  # in the order `follow` hands out each answer's pieces
POLL = 10.0  # seconds one long poll waits for news (the server allows 30)


def follow(
    http: Transport,
    run_id: str,
    on_output: Callable[[str, str], None],
    offsets: dict[str, int] | None = None,
    wait: float = POLL,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Read a run's output from `offsets` (updated in place; from the start when None), handing
    each piece to `on_output(stream, text)`: stream "stdout", "stderr", or "log" (the platform's
    notes). Long-polls `wait` seconds at a time until an answer says the run has ended: the
    server reads a run's status before its output, and stores a run's last output with its end,
    so that answer holds all the output that was left (no further request). With wait=0, or once
    `deadline` (a time.monotonic()) passes, stops at the first answer with nothing new. Returns
    the last answer: `status`, `offsets`, `truncated`, and `run` (the run) once it has ended.
    A server that goes after its first answer is said by `lost_server`. With a `deadline`, each
    request's limit ends at most the client's limit for one request past it (`Transport.until`)."""
    offsets = {"stdout": 0, "stderr": 0, "log": 0} if offsets is None else offsets
    answered = False
    while True:
        poll = wait if deadline is None else max(0.0, min(wait, deadline - time.monotonic()))
        params = {**offsets, "wait": poll}
        # With a deadline, each poll's limit is cut to it (and one request's limit more): a
        # server that stops answering can't hold wait(timeout=5) for the poll's 30 s margin.
        limit = {} if deadline is None else {"timeout": http.until(deadline, params)}
        try:
            chunk: dict[str, Any] = http.get(f"/v1/runs/{segment(run_id)}/logs", params=params, **limit)
        except ServerUnreachable:
            if not answered:
                raise  # never reached: said as any command says it
            raise lost_server(
                f"run {run_id}",
                f"Once it answers again, `orch runs show {run_id}` shows how it ended (a server that "
                "stops records what it was running as failed).",
            ) from None
        answered = True
        offsets.update(_checked(chunk))
        news = [stream for stream in STREAMS if chunk[stream]]
        for stream in news:
            on_output(stream, chunk[stream])
        if chunk["status"] in FINAL or (not news and poll <= 0):
            return chunk


def _checked(chunk: dict[str, Any]) -> dict[str, int]:
    """A logs answer's new offsets, once its fields are of the kinds orch sends (its `status`
    text, each stream's text, `offsets` a whole number per stream); else `not_understood`, never
    a TypeError from the caller's code ("status": ["x"] against FINAL)."""
    url = getattr(chunk, "url", None) or "its address"

    def wrong(key: str, value: Any, wanted: str) -> Exception:
        return not_understood(url, f"{as_json_text(value)} as `{key}` where orch sends {wanted}")

    offsets = chunk["offsets"]
    if not isinstance(offsets, dict) or not all(
        type(offsets.get(stream)) is int and offsets[stream] >= 0 for stream in STREAMS
    ):
        raise wrong("offsets", offsets, "a whole number of bytes per stream")
    if not isinstance(chunk["status"], str):
        raise wrong("status", chunk["status"], "text")
    for stream in STREAMS:
        if not isinstance(chunk[stream], str):
            raise wrong(stream, chunk[stream], "text")
    return {stream: offsets[stream] for stream in STREAMS}


def lost_server(followed: str, fix: str) -> ServerUnreachable:
    """What a follower says when the server it was following `followed` through goes (a stop,
    whose long polls answer at once; a kill; the network): not the connection's error, which
    reads as if nothing was done, but what was lost, and `fix`: what becomes of it (a run is
    recorded as failed once the server stops answering; a build or a deployment is queued
    again) and which command reads or follows it once the server answers again. The one
    sentence of `orch run`, `orch runs logs -f` and the CLI's other followers (cli/utils.py's
    `following`)."""
    return ServerUnreachable(
        f"Lost the orch server while following {followed}: it stopped, or no longer answers.", fix
    )


def event_pages(
    http: Transport, run_id: str, after: int = 0, follow: bool = False
) -> Iterator[list[dict[str, Any]]]:
    """A managed loop's events after `after` (a `seq`), oldest first, one answer at a time: an
    answer holds at most 1000 (the API's page), so a run with more takes several. Without
    `follow`, every event there is now; with it, long polls of POLL seconds until the run has
    ended: its status is read before each poll, so an empty answer after the end means that
    there are no more."""
    while True:
        ended = not follow or http.get(f"/v1/runs/{segment(run_id)}")["status"] in FINAL
        found: list[dict[str, Any]] = listed(
            http.get(
                f"/v1/runs/{segment(run_id)}/events",
                params={"after": after, "wait": POLL if follow else 0},
            )
        )
        if found:
            yield found
            after = found[-1]["seq"]
        elif ended:
            return
