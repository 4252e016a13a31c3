"""`resources:` of orch.yaml: the limits of each run's sandbox, with the sizes and durations people write."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orch.bundle.manifest_problems import problem, show
from orch.sizes import parse_size

MiB = 1024**2
GiB = 1024**3
MIN_CPUS = 0.01
_SECONDS = re.compile(r"([0-9]{1,9})\s*([smh]?)")
_SECONDS_PER = {"": 1, "s": 1, "m": 60, "h": 3600}


class Resources(BaseModel):
    """`resources:`: the limits of each run's sandbox."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)

    cpus: float = 1.0
    memory_bytes: int = Field(default=512 * MiB, alias="memory")
    timeout: int = 300  # seconds of wall time
    pids: int = 256  # processes and threads: what stops a fork bomb

    @field_validator("cpus", mode="before")
    @classmethod
    def _check_cpus(cls, value: object) -> float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None:
            raise problem(f"{show(value)} is not a number of CPUs.", "Use a number such as 1 or 0.5.")
        # A hundredth of a CPU is the least the kernel's CPU quota takes (1 ms in each 100 ms);
        # less would round to no quota at all, which runc reads as no limit.
        if not MIN_CPUS <= number <= 64:
            raise problem(
                f"{show(value)} is not between {MIN_CPUS:g} and 64 CPUs.",
                f"Use {MIN_CPUS:g} (a hundredth of one CPU) to 64.",
            )
        return number

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _check_memory(cls, value: object) -> int:
        size: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str):
            size = parse_size(value)
        if size is None:
            raise problem(f"{show(value)} is not a size.", "Use a size such as 512Mi or 1Gi.")
        if size < 16 * MiB:
            raise problem(f"{show(value)} is less than the minimum of 16 MiB.", "Use at least 16Mi.")
        if size > 64 * GiB:
            raise problem(f"{show(value)} is more than the maximum of 64 GiB.", "Use at most 64Gi.")
        return size

    @field_validator("timeout", mode="before")
    @classmethod
    def _check_timeout(cls, value: object) -> int:
        seconds = _whole(value)
        match = _SECONDS.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is not None:
            seconds = int(match[1]) * _SECONDS_PER[match[2]]
        if seconds is None:
            raise problem(
                f"{show(value)} is not a number of seconds.", "Use whole seconds such as 300, or 5m."
            )
        if not 1 <= seconds <= 86400:
            raise problem(f"{show(value)} is not between 1 second and 24 hours.", "Use 1 to 86400 seconds.")
        return seconds

    @field_validator("pids", mode="before")
    @classmethod
    def _check_pids(cls, value: object) -> int:
        count = _whole(value)
        if count is None:
            raise problem(f"{show(value)} is not a whole number.", "Use a number of processes such as 256.")
        if not 16 <= count <= 4096:
            raise problem(f"{show(value)} is not between 16 and 4096.", "Use 16 to 4096 processes.")
        return count


def _whole(value: object) -> int | None:
    """An int from an int, a whole float or a digit string; None for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,18}\s*", value):
        return int(value)
    return None
