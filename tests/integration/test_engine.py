"""The Podman engine's housekeeping on the real machine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from orch.engine import PodmanEngine
from orch.engine.podman_run import CGROUP_ROOT, cgroup_parent

pytestmark = pytest.mark.integration

PREFIX = "orch-enginetest-"


@pytest.fixture
def cgroups() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        for path in CGROUP_ROOT.glob(f"*/{cgroup_parent(name).lstrip('/')}"):
            path.rmdir()
    subprocess.run(["podman", "rm", "-f", f"{PREFIX}live"], capture_output=True, check=False)


def make_parent(name: str) -> None:
    (CGROUP_ROOT / "memory" / cgroup_parent(name).lstrip("/")).mkdir()
    (CGROUP_ROOT / "pids" / cgroup_parent(name).lstrip("/")).mkdir()


def test_leftover_cgroups_of_gone_containers_are_removed(cgroups: list[str]) -> None:
    """A server killed between `podman rm` and removing the sandbox's parent cgroup leaves the
    cgroup behind: the sweep removes it, and leaves those of containers that still exist."""
    image = subprocess.run(
        ["podman", "images", "--format", "{{.Id}}", "--filter", "reference=localhost/orch/python"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    live = ["podman", "create", "--name", f"{PREFIX}live", image, "true"]
    subprocess.run(live, capture_output=True, check=True)
    for name in (f"{PREFIX}gone", f"{PREFIX}live", "orch-other-gone"):
        make_parent(name)
        cgroups.append(name)
    assert PodmanEngine().remove_leftovers(PREFIX) == 1
    exists = {n: (CGROUP_ROOT / "memory" / cgroup_parent(n).lstrip("/")).is_dir() for n in cgroups}
    # The gone container's cgroup is removed; the live one's, and another prefix's, are kept.
    assert exists == {f"{PREFIX}gone": False, f"{PREFIX}live": True, "orch-other-gone": True}
    assert not (CGROUP_ROOT / "pids" / cgroup_parent(f"{PREFIX}gone").lstrip("/")).exists()
    cgroups.remove(f"{PREFIX}gone")
