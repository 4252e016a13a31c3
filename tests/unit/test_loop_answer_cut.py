"""A loop's answer cut at its bound (1 MiB, the run's stdout's) never splits a `***`: it ends a
byte or two early, as stdout does, not `…y*` or `…y**` (found by a tester)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.bundle.loop_manifest import LoopConfig
from orch.loop.clip import head
from orch.loop.driver import run_loop
from orch.loop.providers import connect
from orch.models import RunStatus
from orch.secret.mask import Mask
from tests.unit.test_loop_answer_shape import Canned, completion
from tests.unit.test_loop_driver import QUICK, LocalSandbox
from tests.unit.test_loop_events import SECRET, events


@pytest.mark.parametrize(
    ("before", "kept"),
    [(1, "y" * 9), (2, "y" * 8), (3, "y" * 7 + "***"), (0, "y" * 10)],  # 10 bytes fit
)
def test_the_answers_cut_never_splits_a_mask(before: int, kept: str) -> None:
    made, recorded = events(answer_limit=10)
    answer, truncated = made.final("y" * (10 - before) + SECRET + "z" * 10)
    assert (answer, truncated) == (kept, True)
    assert recorded.events == [("final", {"text": kept, "truncated": True})]


def test_the_head_ends_off_a_mask_and_on_a_characters_start() -> None:
    assert head(b"abc", 3) == head(b"abc", 5) == b"abc"
    assert head(b"ab***", 3) == b"ab"
    assert head(b"ab***", 4) == b"ab"
    assert head(b"ab***c", 5) == b"ab***"
    assert head("aé***".encode(), 3) == "aé".encode()
    assert head("aé***".encode(), 2) == b"a"  # within the `é`
    assert head("a€".encode(), 3) == b"a"


@pytest.mark.parametrize("before", [1, 2])
def test_a_runs_answer_cut_at_its_bound_ends_before_the_mask(tmp_path: Path, before: int) -> None:
    key = "zq-Tok3n-key"
    server = Canned(completion({"content": "y" * (64 - before) + key + "z" * 10}))
    try:
        loop = LoopConfig(model="m", provider="openai", base_url=f"{server.url}/v1")
        outcome = run_loop(
            loop,
            connect(loop, key),
            LocalSandbox(tmp_path),
            "hi",
            lambda *_: None,
            mask=Mask([key]),
            answer_limit=64,
            backoff=QUICK,
        )
    finally:
        server.close()
    assert (outcome.status, outcome.answer, outcome.truncated) == (
        RunStatus.SUCCEEDED,
        "y" * (64 - before),
        True,
    )
