"""What `orch sandbox create` says of when its sandbox goes: "removed after 600 s idle" even when
the server's sandbox_lifetime (here 120 s) removes it sooner (found by a tester)."""

from __future__ import annotations

from typing import Any

from orch.cli.sandbox import _summary


def sandbox(timeout: int, created: str, expires: str) -> dict[str, Any]:
    return {
        "id": "sbx_x",
        "status": "running",
        "environment": {"name": "python"},
        "memory_bytes": 512 * 2**20,
        "cpus": 1,
        "network": False,
        "timeout": timeout,
        "created_at": created,
        "expires_at": expires,
    }


def test_a_lifetime_shorter_than_the_idle_timeout_is_said() -> None:
    said = _summary(sandbox(600, "2026-12-07T10:00:00+00:00", "2026-12-07T10:02:00+00:00"))
    assert said.endswith(
        "removed 120 s after its creation, at the end of its lifetime (2026-12-07T10:02:00), "
        "before 600 s idle could pass"
    )


def test_an_idle_timeout_that_comes_first_is_said_alone() -> None:
    said = _summary(sandbox(600, "2026-12-07T10:00:00.123+00:00", "2026-12-07T10:10:00.123+00:00"))
    assert said.endswith("· removed after 600 s idle")
