"""Which limit a failed build reached (engine/build_limits.py `Limits.reached`), read from a fake
cgroup tree: the memory limit is named for a step that reached it and was killed, whatever its
exit code (a found defect: a step that filled a tmpfs mount to the limit ended with 1, and its
build said only "exit code 1")."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.engine import build_limits

MEMORY = 64 * 2**20
STEP = "STEP 2/2: RUN --mount=type=tmpfs,target=/t head -c 100M /dev/zero > /t/x; df -h /t; echo done"
# What Podman printed for that step, on a real host (its `head` killed, then the step's container).
TMPFS_TAIL = [
    "STEP 1/2: FROM localhost/orch/python:1",
    STEP,
    "Killed",
    "container exited on killed",
    f'Error: building at STEP "{STEP[10:]}": while running runtime: exit status 1',
]


@pytest.fixture
def limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> build_limits.Limits:
    monkeypatch.setattr(build_limits, "CGROUP_ROOT", tmp_path)
    return build_limits.Limits.of(MEMORY, 0, "enginetest/0123456789abcdef")


def _peak(limits: build_limits.Limits, root: Path, peak: int) -> None:
    folder = root / "memory" / f"orch_{limits.name}"
    folder.mkdir(parents=True)
    (folder / "memory.max_usage_in_bytes").write_text(f"{peak}\n")


def test_a_step_killed_at_the_memory_limit_names_it_whatever_its_exit_code(
    limits: build_limits.Limits, tmp_path: Path
) -> None:
    _peak(limits, tmp_path, MEMORY + 262_144)
    for code, tail in [(1, TMPFS_TAIL), (137, [STEP]), (2, [STEP, "make: *** [Makefile:3: all] Killed"])]:
        reached = limits.reached(code, tail)
        assert reached is not None, (code, tail)
        assert reached.message == (
            "A step of the build was killed at the 64 MiB memory limit that ORCH_BUILD_MEMORY "
            "gives build steps"
        )
        assert "tmpfs" in reached.fix and "raise ORCH_BUILD_MEMORY" in reached.fix
        assert "exit_code" not in reached.details


def test_a_peak_at_the_limit_without_a_kill_is_the_steps_own_failure(
    limits: build_limits.Limits, tmp_path: Path
) -> None:
    """A step that writes more files than the limit fills it with page cache, given back without
    a kill: its failure (or a later step's) is its own."""
    _peak(limits, tmp_path, MEMORY)
    plain = [STEP, "ERROR: No matching distribution found for nothing"]
    assert limits.reached(3, plain) is None
    # A kill an earlier step's output said, or the step's own text that Podman quotes, is not one.
    earlier = ["STEP 2/3: RUN x || true", "Killed", "STEP 3/3: RUN grep -q Killed log", "exit 1"]
    assert limits.reached(1, earlier) is None
    error = 'Error: building at STEP "RUN grep -q Killed log": while running runtime: exit status 1'
    quoted = [*earlier[2:], error]
    assert limits.reached(1, quoted) is None


def test_a_kill_below_the_memory_limit_is_not_the_limits(limits: build_limits.Limits, tmp_path: Path) -> None:
    _peak(limits, tmp_path, MEMORY // 2)
    assert limits.reached(1, TMPFS_TAIL) is None
    assert limits.reached(137, [STEP]) is None
