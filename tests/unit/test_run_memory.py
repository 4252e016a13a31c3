"""The memory sandboxes may hold at once (services/run_memory.py): runs and sandboxes on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from orch.services.run_memory import Budget, Budgets

GiB = 2**30


def never() -> bool:
    return False


class Entering:
    """A thread that enters the budget for `need` bytes and stays until let go."""

    def __init__(self, budget: Budget, need: int, should_stop: Callable[[], bool] = never) -> None:
        self.waited: list[int] = []
        self.admitted: bool | None = None
        self.inside = threading.Event()
        self.leave = threading.Event()
        self._budget, self._need, self._stop = budget, need, should_stop
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self._budget.reserved(self._need, self._stop, self.waited.append) as admitted:
            self.admitted = admitted
            self.inside.set()
            if admitted:
                self.leave.wait(30)

    def out(self) -> None:
        self.leave.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def waiting_for(budget: Budget, n: int) -> None:
    deadline = time.monotonic() + 10
    while budget.waiting != n:
        assert time.monotonic() < deadline, f"{budget.waiting} waiting, not {n}"
        time.sleep(0.005)


def test_runs_that_fit_go_in_at_once_and_the_one_over_waits_until_enough_ends() -> None:
    budget = Budget(4 * GiB)
    a, b = Entering(budget, 2 * GiB), Entering(budget, 2 * GiB)
    assert a.inside.wait(5) and b.inside.wait(5)
    assert (a.waited, b.waited, budget.used) == ([], [], 4 * GiB)
    c = Entering(budget, 1 * GiB)
    waiting_for(budget, 1)
    assert not c.inside.is_set() and c.waited == [4 * GiB]  # told once, with what others hold
    a.out()
    assert c.inside.wait(5) and c.admitted
    assert budget.used == 3 * GiB
    for e in (b, c):
        e.out()
    assert (budget.used, budget.waiting) == (0, 0)


def test_a_small_run_does_not_overtake_a_large_one_waiting() -> None:
    budget = Budget(4 * GiB)
    a = Entering(budget, 3 * GiB)
    assert a.inside.wait(5)
    large = Entering(budget, 2 * GiB)
    waiting_for(budget, 1)
    small = Entering(budget, 1 * GiB)  # would fit beside a, but the large one came first
    waiting_for(budget, 2)
    time.sleep(0.1)
    assert not small.inside.is_set()
    a.out()
    assert large.inside.wait(5) and small.inside.wait(5)  # then both fit
    assert budget.used == 3 * GiB
    for e in (large, small):
        e.out()


def test_a_run_larger_than_the_budget_runs_alone() -> None:
    budget = Budget(4 * GiB)
    a = Entering(budget, 1 * GiB)
    assert a.inside.wait(5)
    huge = Entering(budget, 8 * GiB)
    waiting_for(budget, 1)
    a.out()
    assert huge.inside.wait(5) and huge.admitted and budget.used == 8 * GiB
    after = Entering(budget, 1 * GiB)
    waiting_for(budget, 1)  # nothing beside it
    huge.out()
    assert after.inside.wait(5)
    after.out()


def test_a_waiting_run_told_to_stop_holds_nothing_and_the_next_goes_on() -> None:
    budget = Budget(2 * GiB)
    a = Entering(budget, 2 * GiB)
    assert a.inside.wait(5)
    stop = threading.Event()
    cancelled = Entering(budget, 1 * GiB, stop.is_set)
    waiting_for(budget, 1)
    behind = Entering(budget, 1 * GiB)
    waiting_for(budget, 2)
    stop.set()
    assert cancelled.inside.wait(5) and cancelled.admitted is False
    cancelled.out()
    waiting_for(budget, 1)
    assert budget.used == 2 * GiB
    a.out()
    assert behind.inside.wait(5) and behind.admitted
    behind.out()
    assert (budget.used, budget.waiting) == (0, 0)


def test_a_held_share_stays_until_released_and_runs_wait_for_it() -> None:
    budget = Budget(2 * GiB)
    assert budget.hold("sbx_a", GiB, never, pytest.fail)  # fits: no wait, so no on_wait
    assert (budget.used, budget.held_by_sandboxes) == (GiB, GiB)
    run = Entering(budget, 2 * GiB)
    waiting_for(budget, 1)
    assert run.waited == [GiB]
    budget.release("sbx_a")
    assert run.inside.wait(5) and run.admitted
    assert (budget.used, budget.held_by_sandboxes) == (2 * GiB, 0)
    budget.release("sbx_a")  # a second release gives nothing back twice
    assert budget.used == 2 * GiB
    run.out()
    assert budget.used == 0


def test_a_hold_waits_in_the_line_and_gives_up_holding_nothing() -> None:
    budget = Budget(2 * GiB)
    a = Entering(budget, 2 * GiB)
    assert a.inside.wait(5)
    deadline = time.monotonic() + 0.2
    waited: list[int] = []
    assert not budget.hold("sbx_b", GiB, lambda: time.monotonic() >= deadline, waited.append)
    assert (waited, budget.used, budget.held_by_sandboxes, budget.waiting) == ([2 * GiB], 2 * GiB, 0, 0)
    budget.release("sbx_b")  # held nothing: gives nothing back
    assert budget.used == 2 * GiB
    got: list[bool] = []
    later = threading.Thread(target=lambda: got.append(budget.hold("sbx_c", GiB, never, waited.append)))
    later.start()
    waiting_for(budget, 1)
    a.out()
    later.join(5)
    assert got == [True] and (budget.used, budget.held_by_sandboxes) == (GiB, GiB)


def test_both_budgets_are_taken_memory_first_and_a_wait_names_its_budget() -> None:
    budgets = Budgets(Budget(2 * GiB), Budget(100))
    told: list[tuple[str, int]] = []
    tell = lambda b, n: told.append((b, n))  # noqa: E731
    assert budgets.hold("sbx_a", GiB, 80, never, tell) is None
    assert (budgets.memory.used, budgets.pids.used, told) == (GiB, 80, [])
    # Memory fits, processes don't: it waits for processes, holding its memory meanwhile.
    deadline = time.monotonic() + 0.2
    gave_up = budgets.hold("sbx_b", GiB, 40, lambda: time.monotonic() >= deadline, tell)
    assert (gave_up, told) == ("processes", [("processes", 80)])
    assert (budgets.memory.used, budgets.pids.used) == (GiB, 80)  # its memory was given back
    with budgets.reserved(GiB, 20, never, tell) as waited_for:
        assert waited_for is None and (budgets.memory.used, budgets.pids.used) == (2 * GiB, 100)
    budgets.release("sbx_a")
    budgets.release("sbx_a")  # a second release gives nothing back twice
    assert (budgets.memory.used, budgets.pids.used) == (0, 0)


def test_a_run_told_to_stop_while_it_waits_for_memory_holds_no_processes() -> None:
    budgets = Budgets(Budget(GiB), Budget(100))
    assert budgets.hold("sbx_a", GiB, 10, never, pytest.fail) is None
    deadline = time.monotonic() + 0.2
    told: list[tuple[str, int]] = []
    tell = lambda b, n: told.append((b, n))  # noqa: E731
    with budgets.reserved(GiB, 10, lambda: time.monotonic() >= deadline, tell) as w:
        assert w == "memory" and told == [("memory", GiB)]
        assert (budgets.memory.used, budgets.pids.used, budgets.pids.waiting) == (GiB, 10, 0)
    assert (budgets.memory.used, budgets.pids.used) == (GiB, 10)
