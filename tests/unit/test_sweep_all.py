"""Sweeping a platform's sandboxes in every runtime: each runtime kills its own before any
launcher tears down, since the runtimes share one directory of bundles and a launcher can end
only its own runtime's sandboxes (another's it would wait on, ~2 s each, at every stop)."""

from __future__ import annotations

from orch.sandbox.launcher import Isolation, sweep_all
from orch.services.platform import Platform
from orch.workers import Workers


class Runtime:
    """One runtime's launcher over a directory of bundles shared with the others."""

    def __init__(self, name: str, bundles: dict[str, str], alive: set[str], calls: list[str]) -> None:
        self.name = name
        self.bundles = bundles  # sandbox name -> the runtime that runs it, for every runtime
        self.alive = alive  # the sandboxes still running, of every runtime
        self.calls = calls
        self.met_alive: list[str] = []

    def kill(self, prefix: str) -> list[str]:
        self.calls.append(f"kill {self.name}")
        mine = sorted(n for n in self.alive if n.startswith(prefix) and self.bundles[n] == self.name)
        self.alive.difference_update(mine)
        return mine

    def sweep(self, prefix: str) -> int:
        self.calls.append(f"sweep {self.name}")
        found = sorted(n for n in self.bundles if n.startswith(prefix))
        for name in found:
            if name in self.alive:  # what the teardown would wait on, and leave running
                self.met_alive.append(name)
            del self.bundles[name]
        return len(found)

    def close(self) -> None:
        self.calls.append(f"close {self.name}")


def _runtimes(calls: list[str], prefix: str = "p-") -> tuple[Runtime, Runtime]:
    names = [f"{prefix}warm-a", f"{prefix}warm-b", f"{prefix}sb-c", "other-x"]
    bundles = dict(zip(names, ["runc", "runsc", "runsc", "runc"], strict=True))
    alive = set(bundles)
    return Runtime("runc", bundles, alive, calls), Runtime("runsc", bundles, alive, calls)


def test_every_runtime_kills_its_own_before_any_teardown() -> None:
    calls: list[str] = []
    runc, runsc = _runtimes(calls)
    # runc first, as the platform's launchers are ordered: its sweep finds runsc's bundles too.
    assert sweep_all([runc, runsc], "p-") == 3
    assert calls == ["kill runc", "kill runsc", "sweep runc", "sweep runsc"]
    assert runc.met_alive == [] and runsc.met_alive == []
    assert runc.bundles == {"other-x": "runc"}  # another owner's prefix is left alone


def test_a_stopping_server_closes_every_launcher_then_sweeps_them_all(platform: Platform) -> None:
    calls: list[str] = []
    runc, runsc = _runtimes(calls, platform.container_prefix)
    platform.launchers = {Isolation.RUNC: runc, Isolation.GVISOR: runsc}  # type: ignore[dict-item]
    Workers(platform).stop()
    # The runs in flight are killed before the workers are waited for; then the sweep (which
    # kills again what a worker started meanwhile).
    kills = ["kill runc", "kill runsc"]
    assert calls == ["close runc", "close runsc", *kills, *kills, "sweep runc", "sweep runsc"]
    assert runc.met_alive == [] and runsc.met_alive == []
    assert runc.bundles == {"other-x": "runc"}
