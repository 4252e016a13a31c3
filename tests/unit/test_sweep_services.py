"""A start's sweep of what a stopped server's sandboxes left takes none of the services' parent
cgroups, which have the sandboxes' form (`PREFIXsvc_…`): a tester's every start after a clean
stop logged "removed what 4 sandboxes of a stopped server left" for two live services, and
tried to remove their cgroups (sandbox/runc.py `Launcher.sweep`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.sandbox import netns, runc


def test_the_sweep_leaves_the_services_cgroups_and_counts_only_sandboxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = "orch-x-"
    launcher = runc.Launcher(runtime="runc", prefix=prefix, state=tmp_path, pool_size=0)
    removed: list[str] = []
    monkeypatch.setattr(launcher, "kill", lambda _prefix: [])
    monkeypatch.setattr(launcher, "_release_holds", lambda _prefix: 0)
    monkeypatch.setattr(netns, "sweep", lambda *_args: 0)
    monkeypatch.setattr(
        runc, "cgroup_parents", lambda _prefix: {f"{prefix}svc_abc-v1-x1y2z3", f"{prefix}run_left"}
    )
    monkeypatch.setattr(runc, "remove_cgroup_parent", lambda name, attempts=20: removed.append(name) or True)
    assert launcher.sweep(prefix) == 1
    assert removed == [f"{prefix}run_left"]
