"""Who uses an environment: the check that `delete` runs. Later nouns (agents) plug in here."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from orch.store.schema import EnvironmentRow

# A check returns a plain description of each user of `env` in the workspace, e.g. "agent crawler".
UsageCheck = Callable[[Session, str, EnvironmentRow], list[str]]

_CHECKS: list[UsageCheck] = []


def register(check: UsageCheck) -> UsageCheck:
    """Add a usage check (usable as a decorator)."""
    _CHECKS.append(check)
    return check


def users(session: Session, workspace_id: str, env: EnvironmentRow) -> list[str]:
    return [u for check in _CHECKS for u in check(session, workspace_id, env)]
