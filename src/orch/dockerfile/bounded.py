"""Validation under a time limit, in worker processes, so that it never stalls the server.

BuildKit's parser is Go code called through the `dockerfile` binding, which holds the GIL until
it returns, and some texts keep it busy for a long time: a 250,000-character word took 30 s,
${...} nested 1,600 deep 10 s. Run in the server's process, one such request stalled every
other request for as long. So validation runs in a small pool of worker processes: waiting
for one releases the GIL, and one still busy after TIME_LIMIT is killed and the file reported
as too slow to parse. A Dockerfile of real shape up to the server's 256 KiB limit takes a
fraction of that. Where no worker process can be started, validation runs here, unbounded.
"""

from __future__ import annotations

from orch.dockerfile import worker, worker_pool
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.validate import Validation, check

TIME_LIMIT = 1.5  # seconds; with the exchange, a request is answered within 2 s
MAX_TEXT = 256 * 1024  # characters: a Dockerfile longer than this is refused, wherever it comes from


def validate(text: str) -> Validation:
    """Check a Dockerfile's text (see validate.check) within TIME_LIMIT; never raises, whatever the text."""
    if len(text) > MAX_TEXT:  # the same verdict from the CLI, the API and a bundle's Dockerfile
        return Validation((_too_long(text),), ())
    answer = worker_pool.run({"text": text}, TIME_LIMIT)
    if answer is None:
        return check(text)
    if isinstance(answer, worker_pool.Stopped):
        return Validation((_stopped(answer, text),), ())
    if "bug" in answer:
        raise RuntimeError(f"Checking the Dockerfile failed: {answer['bug']}")
    return worker.from_wire(answer)


def _too_long(text: str) -> Finding:
    return error(
        1,
        "",
        f"The Dockerfile has {len(text):,} characters, more than the limit of {MAX_TEXT:,} (256 KiB).",
        "Download large data in a RUN step, or move long scripts into files the build fetches, "
        "instead of writing them into the Dockerfile.",
    )


def _stopped(stopped: worker_pool.Stopped, text: str) -> Finding:
    if not stopped.timed_out:
        return error(
            1,
            "",
            f"BuildKit's parser crashed on this Dockerfile (exit code {stopped.exit_code}).",
            "Please report this Dockerfile as a bug.",
        )
    # Long words and long lines are what the parser is slow on: point at the longest line.
    lines = text.split("\n")
    longest = max(range(len(lines)), key=lambda n: len(lines[n]))
    return error(
        longest + 1,
        "",
        f"The Dockerfile was not checked because parsing it took more than {TIME_LIMIT:g} s: "
        f"BuildKit's parser is slow on very long words and instructions, such as on this line "
        f"({len(lines[longest]):,} characters).",
        "Split long words and instructions, or download large data in a RUN step instead of "
        "writing it into the Dockerfile.",
    )
