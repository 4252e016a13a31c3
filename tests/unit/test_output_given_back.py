"""Output a run or build stored with a transaction of its own that then failed (services/
output_store.py, `Pending.store`): the pieces that transaction took wait again and are stored
later, once, in order; a transaction that commits stores them once too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from orch.models import BuildStatus, RunStatus
from orch.services import environments as envs
from orch.services import output_store
from orch.services.platform import Platform
from orch.services.run_output import RunOutput
from orch.store.schema import BuildRow, RunRow
from orch.workers import runs
from tests.conftest import build_log, drain
from tests.refusing_store import LOCKED, no_pauses, refusal
from tests.unit.test_output_store_failures import a_run, run_log

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo one\n"


class RefusedCommit:
    """The store's sessions, whose commit the store refuses (as a locked SQLite does) once `arm`
    is called, for the first transaction `which` picks; `refused` counts them."""

    def __init__(self, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real: Callable[..., AbstractContextManager[Session]] = platform.store.session
        self.which: Callable[[Session], bool] | None = None
        self.refused = 0
        monkeypatch.setattr(platform.store, "session", self.session)

    def arm(self, which: Callable[[Session], bool] = lambda s: True) -> None:
        self.which = which

    @contextmanager
    def session(self, *args: object, **kwargs: object) -> Iterator[Session]:
        with self.real(*args, **kwargs) as s:
            event.listen(s, "before_commit", self._before_commit)
            yield s

    def _before_commit(self, s: Session) -> None:
        if self.which is not None and self.which(s):
            self.which = None
            self.refused += 1
            raise refusal(LOCKED, "COMMIT")


@pytest.fixture
def passes(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The flusher's passes, run when the test says (no thread of its own storing meanwhile):
    what a transaction took is then the test's to know."""

    def want(self: output_store.Flusher, writer: output_store.Pending) -> None:
        with self._lock:
            self._waiting[writer] = None

    monkeypatch.setattr(output_store.Flusher, "want", want)
    return output_store.flusher(platform).store_waiting


def run_status(platform: Platform, run_id: str) -> str | None:
    with platform.store.session() as s:
        return s.scalar(select(RunRow.status).where(RunRow.id == run_id))


QUEUED_AGAIN = "The server stopped while it waited; it was queued again.\n"


@pytest.mark.parametrize("later", ["again", "close", "flusher"])
def test_a_run_queued_again_whose_transaction_fails_keeps_its_output(
    platform: Platform,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    passes: Callable[[], None],
    later: str,
) -> None:
    """A run queued again by a stopping server, whose store refused that transaction: the lines
    it had printed (and the one saying it was queued again) were never stored. Stored later,
    by the next store that commits, they are stored once, in order."""
    run_id = a_run(platform, workspace, RunStatus.STARTING)
    out = RunOutput(platform, run_id)
    store = RefusedCommit(platform, monkeypatch)
    out.line("→ environment default")
    store.arm()
    with pytest.raises(OperationalError):
        runs._queue_again(platform, out, "it waited")
    assert store.refused == 1
    assert run_status(platform, run_id) == RunStatus.STARTING  # the transaction rolled back
    assert run_log(platform, run_id) == ""
    expected = f"→ environment default\n{QUEUED_AGAIN}"
    if later == "again":  # the same transaction, committed this time
        runs._queue_again(platform, out, "it waited")
        assert run_status(platform, run_id) == RunStatus.QUEUED
        expected += QUEUED_AGAIN
        assert run_log(platform, run_id) == expected
    out.line("after")
    if later == "close":
        out.close()  # the worker's end stores the rest
    else:
        passes()  # the flusher's pass the later line asked for
    assert run_log(platform, run_id) == f"{expected}after\n"
    passes()  # and again, then the close: nothing is stored twice
    out.close()
    assert run_log(platform, run_id) == f"{expected}after\n"


def _settling(status: BuildStatus) -> Callable[[Session], bool]:
    """The transaction that moves a build to `status`."""
    return lambda s: any(
        isinstance(o, BuildRow) and o.status == status for o in list(s.identity_map.values())
    )


def _firsts(log: str) -> list[str]:
    """The first word of each of the log's lines."""
    return [line.split(" ")[0] for line in log.splitlines()]


def test_a_build_whose_ready_transaction_fails_keeps_its_log(
    platform: Platform,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    passes: Callable[[], None],
) -> None:
    """A build whose ready transaction the store refused: it is queued again, with its log so
    far (it was failed as a crash, with a log that had lost every line the build printed), and
    the next attempt's log goes on after it."""
    no_pauses(monkeypatch)
    store = RefusedCommit(platform, monkeypatch)
    store.arm(_settling(BuildStatus.READY))
    build_id = envs.create(platform, workspace[0], "one", DOCKERFILE).build_id or ""
    assert drain(platform) == 2  # the build, then the same build queued again
    assert store.refused == 1
    with platform.store.session() as s:
        row = s.get(BuildRow, build_id)
        assert row is not None and row.status == BuildStatus.READY
    passes()
    log = build_log(platform, build_id)
    firsts = ["STEP", "STEP", "COMMIT"]
    assert _firsts(log) == [*firsts, "", "The", *firsts], log  # each once, in order
    assert log.splitlines()[1] == "STEP 2/2: RUN echo one"
    assert log.splitlines()[4].startswith("The store refused to record this build (database is locked)")


def test_a_build_whose_failed_transaction_fails_keeps_its_log(
    platform: Platform,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    passes: Callable[[], None],
) -> None:
    """A failed build whose failure the store refused to record: its whole log was lost (its
    close found nothing left to store); the failure is asked again, its log with it."""
    no_pauses(monkeypatch)
    store = RefusedCommit(platform, monkeypatch)
    store.arm(_settling(BuildStatus.FAILED))
    build_id = envs.create(platform, workspace[0], "one", DOCKERFILE + "RUN exit 1\n").build_id or ""
    assert drain(platform) == 1
    assert store.refused == 1
    with platform.store.session() as s:
        row = s.get(BuildRow, build_id)
        assert row is not None and row.status == BuildStatus.FAILED
    passes()
    log = build_log(platform, build_id)
    assert _firsts(log) == ["STEP", "STEP", "STEP", "error:"], log  # each once, in order
    assert log.splitlines()[2] == "STEP 3/3: RUN exit 1"
