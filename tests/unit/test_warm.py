"""The warm pool's policy (sandbox/warm.py) with stand-in sandboxes: one waits per wanted key,
a second for the most recent keys while places are spare, each is given out once, seconds then
the least recently wanted go first when full, idle ones go, a failed start leaves the next run to
start cold, and closing removes every waiting one."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from orch.sandbox.warm import Pool


class Sandboxes:
    def __init__(self, fail: bool = False) -> None:
        self.numbers = itertools.count(1)
        self.started: list[tuple[str, str]] = []  # (key, name)
        self.discarded: list[str] = []
        self.dead: set[str] = set()
        self.fail = fail
        self.lock = threading.Lock()

    def start(self, key: str, template: str) -> str:
        if self.fail:
            raise RuntimeError("the runtime is missing")
        name = f"{template}-{next(self.numbers)}"
        with self.lock:
            self.started.append((key, name))
        return name

    def discard(self, name: str) -> None:
        with self.lock:
            self.discarded.append(name)

    def alive(self, name: str) -> bool:
        return name not in self.dead


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(boxes: Sandboxes, size: int = 2, clock: Clock | None = None) -> Pool[str, str]:
    return Pool(boxes.start, boxes.discard, boxes.alive, size, idle=120, clock=clock or Clock())


def test_a_wanted_key_gets_one_waiting_sandbox_given_out_once() -> None:
    boxes = Sandboxes()
    p = pool(boxes, size=1)
    assert p.take("a") is None  # nothing was wanted yet: the first run starts cold
    p.want("a", "tpl")
    p.want("a", "tpl")  # wanted again before it is taken: still one
    p.wait()
    assert boxes.started == [("a", "tpl-1")]
    assert p.take("a") == "tpl-1"
    assert p.take("a") is None  # never twice
    assert p.take("b") is None  # another key's: never
    assert p.taken == 1
    p.close()
    assert boxes.discarded == []  # the taken one is its run's to remove, not the pool's


def test_a_lone_key_gets_a_second_so_runs_back_to_back_each_find_one() -> None:
    boxes = Sandboxes()
    p = pool(boxes, size=4)
    p.want("a", "a")
    p.wait()
    assert boxes.started == [("a", "a-1"), ("a", "a-2")] and p.waiting() == 2
    assert p.take("a") == "a-1"  # the oldest first
    p.want("a", "a")  # its run ended: one more is started while a-2 waits for the next
    assert p.take("a") == "a-2"
    p.wait()
    assert p.take("a") == "a-3" and p.take("a") is None
    p.close()


def wanted_in_turn(size: int, *keys: str) -> tuple[Sandboxes, Clock, Pool[str, str]]:
    """A pool of `size` whose `keys` were wanted one after the other, a second apart."""
    boxes, clock = Sandboxes(), Clock()
    p = pool(boxes, size=size, clock=clock)
    for key in keys:
        p.want(key, key)
        p.wait()
        clock.now += 1
    return boxes, clock, p


def test_seconds_only_in_places_beyond_one_for_each_wanted_key() -> None:
    boxes, _clock, p = wanted_in_turn(3, "a", "b")
    # a alone had two; b then had its first in the place left, and its second in a's second's
    # (one place beyond one for each key: b's, the most recently wanted).
    assert boxes.discarded == ["a-2"]
    assert [name for _, name in boxes.started] == ["a-1", "a-2", "b-3", "b-4"] and p.waiting() == 3
    p.close()


def test_when_full_seconds_then_the_least_recently_wanted_key_give_way() -> None:
    boxes, clock, p = wanted_in_turn(2, "a", "b")
    assert boxes.discarded == ["a-2"]  # a's second gave its place to b's first, not a's first
    p.want("a", "a")  # a is wanted again: b is now the least recent
    clock.now += 1
    p.want("c", "c")
    p.wait()
    assert boxes.discarded == ["a-2", "b-3"]
    assert p.take("b") is None and p.take("a") == "a-1" and p.take("c") == "c-4"
    p.close()


def test_idle_keys_lose_their_sandbox() -> None:
    boxes = Sandboxes()
    clock = Clock()
    p = pool(boxes, size=1, clock=clock)
    p.want("a", "a")
    p.wait()
    clock.now += 121
    p.expire()
    assert p.take("a") is None
    for _ in range(100):  # removed in a thread of its own
        if boxes.discarded:
            break
        threading.Event().wait(0.01)
    assert boxes.discarded == ["a-1"]
    p.close()


def test_an_idle_key_leaves_nothing_to_do_behind() -> None:
    """A key that goes idle while its first and second are still to be started is dropped from
    what the pool's thread has to do, both times, and that thread goes on with the others."""
    boxes, clock, gate = Sandboxes(), Clock(), threading.Event()
    start = boxes.start
    boxes.start = lambda key, template: (gate.wait(5), start(key, template))[1]  # type: ignore[method-assign]
    p = pool(boxes, size=4, clock=clock)
    p.want("a", "a")  # its first is being started (held at the gate), its second to do
    p.want("b", "b")  # both of b's to do
    clock.now += 100
    p.want("a", "a")
    clock.now += 21
    p.expire()  # b, unwanted for 121 s, goes; a stays
    gate.set()
    p.wait(5)
    assert [name for _, name in boxes.started] == ["a-1", "a-2"] and p.waiting() == 2
    p.close()


@pytest.mark.parametrize(("size", "given"), [(1, None), (2, "a-2")])
def test_a_dead_sandbox_is_not_given_out_but_removed(size: int, given: str | None) -> None:
    """Alone, a dead one leaves the run to start cold; with a second behind it, that one is
    given out."""
    boxes, _clock, p = wanted_in_turn(size, "a")
    boxes.dead.add("a-1")
    assert p.take("a") == given
    assert boxes.discarded == ["a-1"] and p.taken == (given is not None)
    p.close()


def test_a_failed_start_leaves_runs_to_start_cold(caplog: pytest.LogCaptureFixture) -> None:
    boxes = Sandboxes(fail=True)
    p = pool(boxes)
    p.want("a", "a")
    p.wait()
    assert p.take("a") is None
    assert "a warm sandbox could not be started: the runtime is missing" in caplog.text
    p.close()


def test_close_removes_the_waiting_and_starts_no_more() -> None:
    boxes = Sandboxes()
    p = pool(boxes, size=2)
    p.want("a", "a")
    p.wait()
    p.close()
    assert sorted(boxes.discarded) == ["a-1", "a-2"]
    p.want("c", "c")
    assert p.take("c") is None and len(boxes.started) == 2


def starting(boxes: Sandboxes, key: str) -> tuple[Pool[str, str], threading.Event]:
    """A pool whose sandbox for `key` is being started, until the returned event is set."""
    gate = threading.Event()
    start = boxes.start

    def slow_start(key: str, template: str) -> str:
        gate.wait(5)
        return start(key, template)

    boxes.start = slow_start  # type: ignore[method-assign]
    p = pool(boxes)
    p.want(key, key)
    deadline = time.monotonic() + 5
    while p.waiting() == 0:  # its start is under way
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return p, gate


def test_a_sandbox_still_starting_is_waited_for_not_started_again() -> None:
    p, gate = starting(Sandboxes(), "a")
    threading.Timer(0.2, gate.set).start()
    assert p.take("a", wait=5) == "a-1"  # waited for, not None (a cold start)
    assert p.take("b", wait=0.1) is None  # another key: nothing being started for it
    p.close()


def test_size_zero_starts_nothing() -> None:
    boxes = Sandboxes()
    p = pool(boxes, size=0)
    p.want("a", "a")
    p.wait()
    assert boxes.started == [] and p.take("a") is None
    p.close()


def test_one_run_waits_for_a_sandbox_being_started_the_others_start_cold() -> None:
    p, gate = starting(Sandboxes(), "a")
    deadline = time.monotonic() + 5
    got: list[str | None] = []
    first = threading.Thread(target=lambda: got.append(p.take("a", wait=5)))
    first.start()
    while not p._promised:  # the first run waits for it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    threading.Timer(2.0, gate.set).start()  # the start ends in 2 s
    assert p.take("a", wait=5) is None  # the next does not wait for it: it starts cold at once,
    assert not gate.is_set()  # before that start has ended
    first.join(5)
    assert got == ["a-1"]
    p.close()


def test_forget_removes_a_keys_waiting_sandboxes_and_wants_it_no_more() -> None:
    """An environment's image deleted: its key's sandboxes would serve no run and hold the image
    (runc.Launcher.let_go forgets the keys of images without a name)."""
    boxes, _clock, p = wanted_in_turn(2, "a", "b")  # a-1 and b-3 wait (a-2 gave way to b)
    before = len(boxes.discarded)
    p.forget(lambda key: key == "a")
    assert boxes.discarded[before:] == ["a-1"]  # before it returned
    assert p.take("a") is None and p.take("b") == "b-3"
    p.want("b", "b")
    p.wait()
    assert "a" not in {key for key, _ in boxes.started[2:]}  # only b's are started again
    p.close()


def test_one_being_started_for_a_forgotten_key_is_removed_once_started() -> None:
    boxes = Sandboxes()
    p, gate = starting(boxes, "a")
    p.forget(lambda key: key == "a")
    gate.set()
    p.wait()
    deadline = time.monotonic() + 5
    while not boxes.discarded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert boxes.discarded == ["a-1"] and p.take("a") is None and p.waiting() == 0
    p.close()
