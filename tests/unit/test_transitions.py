"""Every status change of a build or a run goes through models.advance, which allows exactly the
moves of the transition tables: each legal pair passes, each other pair is refused."""

from __future__ import annotations

import itertools
from enum import StrEnum

import pytest

from orch.errors import IllegalTransition
from orch.models import (
    BUILD_TRANSITIONS,
    RUN_TRANSITIONS,
    SANDBOX_TRANSITIONS,
    BuildStatus,
    RunStatus,
    SandboxStatus,
    advance,
    sources,
    transitions,
)
from orch.services.platform import Platform
from orch.store import queue
from orch.store.schema import BuildRow, RunRow

TABLES: list[tuple[type[StrEnum], dict]] = [
    (BuildStatus, BUILD_TRANSITIONS),
    (RunStatus, RUN_TRANSITIONS),
    (SandboxStatus, SANDBOX_TRANSITIONS),
]
PAIRS = [
    (kind, old, new, new in table[old])
    for kind, table in TABLES
    for old, new in itertools.product(list(kind), repeat=2)
]


def test_the_tables_cover_every_status() -> None:
    for kind, table in TABLES:
        assert set(table) == set(kind)
        assert transitions(kind) is table  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "old", "new", "legal"), PAIRS, ids=[f"{k.__name__}:{o}->{n}" for k, o, n, _ in PAIRS]
)
def test_every_pair(kind: type[StrEnum], old: StrEnum, new: StrEnum, legal: bool) -> None:
    for current in (old, old.value):  # a member, or a row's column value
        if legal:
            assert advance(current, new) is new  # type: ignore[type-var]
        else:
            with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}"):
                advance(current, new)  # type: ignore[type-var]


def test_final_statuses_go_nowhere() -> None:
    for kind, table in TABLES:
        for status in kind:
            if status.final:  # type: ignore[attr-defined]
                assert table[status] == frozenset()


def test_sources_are_the_tables_read_backwards() -> None:
    assert sources(RunStatus.STARTING) == {RunStatus.QUEUED}
    assert sources(BuildStatus.BUILDING) == {BuildStatus.QUEUED}
    assert sources(RunStatus.CANCELLED) == {RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING}
    assert sources(BuildStatus.QUEUED) == {BuildStatus.BUILDING}


def test_an_illegal_transition_is_a_bug_not_the_users() -> None:
    with pytest.raises(IllegalTransition) as e:
        advance(RunStatus.SUCCEEDED, RunStatus.RUNNING)
    assert e.value.http_status == 500 and e.value.exit_code == 1


def test_a_claim_is_checked_against_the_table(platform: Platform) -> None:
    """A claim is a conditional UPDATE: one the table forbids is refused before any SQL."""
    with pytest.raises(IllegalTransition):
        queue.claim(platform.store, RunRow, RunStatus.RUNNING, RunStatus.QUEUED, platform.instance)
    with pytest.raises(IllegalTransition):
        queue.claim(platform.store, BuildRow, BuildStatus.READY, BuildStatus.BUILDING, platform.instance)
    assert (
        queue.claim(platform.store, RunRow, RunStatus.QUEUED, RunStatus.STARTING, platform.instance) is None
    )
