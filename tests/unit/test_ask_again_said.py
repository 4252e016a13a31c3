"""A write the store refused a while and then took is said once taken: the log's last word on a
run's end recorded after an outage was "trying again in 4 s" (found by a tester), and an operator
could not tell that it was recorded."""

from __future__ import annotations

import logging
import threading

import pytest

from orch.store import refusals
from tests.refusing_store import refusal


def test_a_write_taken_after_refusals_is_said_taken(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(refusals, "PAUSES", (0.0, 0.0, 0.0))
    asked: list[int] = []

    def write() -> str:
        asked.append(1)
        if len(asked) < 3:
            raise refusal()
        return "recorded"

    log = logging.getLogger("test.ask_again")
    with caplog.at_level(logging.INFO, logger="test.ask_again"):
        assert refusals.ask_again(write, "run r1: recording its end", log, threading.Event()) == "recorded"
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3 and all("trying again" in line for line in said[:2]), said
    assert said[2].startswith("run r1: recording its end: done, the store took it (after ")


def test_a_write_taken_at_once_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.ask_again")
    with caplog.at_level(logging.INFO, logger="test.ask_again"):
        assert refusals.ask_again(lambda: 7, "run r2: recording its end", log, threading.Event()) == 7
    assert caplog.records == []
