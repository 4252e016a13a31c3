"""PodmanEngine.remove_leftovers counts what it removed: the parent cgroups of containers Podman
no longer lists, and the containers runc ran on after Podman let go of them; never a launcher's
sandbox (sandboxes on demand are runc's own, with processes in their parent cgroups), which it
leaves alone. It said "removed the leftovers of 2 gone containers" every minute for two open
sandboxes on demand, which it had not touched (found by a tester)."""

from __future__ import annotations

import pytest

from orch.engine import podman_run, runtime_state
from orch.engine.base import ProcessResult
from orch.engine.podman import PodmanEngine


def test_only_what_was_removed_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = PodmanEngine(binary="podman")
    parents = {"p-gone", "p-held-1", "p-held-2", "p-service"}
    monkeypatch.setattr(podman_run, "cgroup_parents", lambda prefix: set(parents))
    monkeypatch.setattr(
        engine, "_cmd", lambda *args, **kw: ProcessResult(0, "p-service\n", "")
    )  # Podman lists the service's container only
    removed: list[str] = []

    def remove(name: str, attempts: int = 0) -> bool:
        if name.startswith("p-held"):
            return False  # processes in it: a sandbox on demand, alive
        removed.append(name)
        return True

    monkeypatch.setattr(podman_run, "remove_cgroup_parent", remove)
    monkeypatch.setattr(runtime_state, "in_cgroups", lambda wanted: {})  # runc of Podman runs none of them
    assert engine.remove_leftovers("p-") == 1
    assert removed == ["p-gone"]
    # A container runc ran on after Podman let go of it is ended, and counted.
    monkeypatch.setattr(runtime_state, "in_cgroups", lambda wanted: {"orch_p-held-1": ["c0ffee"]})
    monkeypatch.setattr(runtime_state, "delete", lambda cid: 1)
    assert engine.remove_leftovers("p-") == 2
