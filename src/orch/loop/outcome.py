"""How a loop ends: its status, the answer or the reason, and what it used."""

from __future__ import annotations

from dataclasses import dataclass

from orch.models import RunStatus


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "model_calls": self.model_calls,
        }


@dataclass(frozen=True)
class Outcome:
    """`answer` (the run's stdout) when it succeeded; else `reason`, a phrase a user understands."""

    status: RunStatus  # succeeded, failed, timed_out or cancelled
    answer: str | None
    reason: str | None
    usage: Usage
    truncated: bool = False  # the answer was longer than the run's stdout keeps: its head


class Stopped(Exception):
    """The loop ends before an answer: a limit, the timeout, a cancel, the endpoint, the sandbox."""

    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def failed(reason: str) -> Stopped:
    return Stopped(RunStatus.FAILED, reason)
