"""orch.kept: one object per owner, made at first use."""

import threading
from types import SimpleNamespace
from unittest.mock import MagicMock

from orch.kept import kept


def test_made_once_per_owner_and_kept_apart() -> None:
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    a, b = SimpleNamespace(), SimpleNamespace()
    assert kept(a, "thing", make) is kept(a, "thing", make) is made[0]
    assert kept(b, "thing", make) is made[1]
    assert len(made) == 2


def test_many_threads_at_first_use_share_one() -> None:
    owner = SimpleNamespace()
    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(kept(owner, "thing", object))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(got) == 8 and len({id(g) for g in got}) == 1


def test_a_mock_owner_gets_a_real_one() -> None:
    """A mock answers any attribute; the kept object is still made, not the mock's attribute."""
    owner = MagicMock()
    assert kept(owner, "found", dict) == {}


def test_what_is_made_may_keep_something_of_its_own() -> None:
    owner = SimpleNamespace()

    def outer() -> tuple[object, object]:
        return ("outer", kept(owner, "inner", object))

    made = kept(owner, "outer", outer)
    assert made[1] is kept(owner, "inner", object)
