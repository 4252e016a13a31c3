"""What validation reports: one finding per problem, each with a line, a reason and a fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """An error stops the build; a warning only informs."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem in a Dockerfile: where it is, what is wrong and why, and what to do instead."""

    line: int
    instruction: str
    severity: Severity
    message: str
    fix: str

    def to_dict(self) -> dict[str, object]:
        """The JSON shape of `orch env validate --json` findings."""
        return {
            "line": self.line,
            "instruction": self.instruction,
            "severity": self.severity.value,
            "message": self.message,
            "fix": self.fix,
        }


def error(line: int, instruction: str, message: str, fix: str) -> Finding:
    """An error finding."""
    return Finding(line, instruction, Severity.ERROR, message, fix)


def warning(line: int, instruction: str, message: str, fix: str) -> Finding:
    """A warning finding."""
    return Finding(line, instruction, Severity.WARNING, message, fix)
