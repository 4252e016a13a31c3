"""A run's dependency install through the API, on the fake engine (whose install writes on the
host side of its mounts): what keys it across bundles and workspaces, the memory it holds in the
server's budget, and what a restart sweeps. sandbox/deps.py's own tests: tests/unit/test_deps.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.sandbox import rootfs
from orch.sandbox.layout import BUNDLE_SOURCE, DEPS
from orch.services import workspaces
from orch.services.platform import Platform
from orch.services.run_memory import Budget
from orch.workers import runs as run_worker
from tests.api.conftest import client_of
from tests.api.test_agents_runs import bundle, publish, run

MiB = 2**20
Behaviour = Callable[[ContainerSpec, Callable[[bytes], None], Callable[[bytes], None]], ContainerExit]


def local_package(value: str) -> dict[str, str]:
    """An agent whose requirements.txt installs a package of its own bundle (tester's F5)."""
    return {
        "main.py": "import mylib\nprint('mylib says', mylib.VALUE)\n",
        "requirements.txt": "/opt/orch/bundle/mylib\n",
        "mylib/pyproject.toml": '[project]\nname = "mylib"\nversion = "0.1"\n',
        "mylib/mylib/__init__.py": f"VALUE = {value!r}\n",
    }


def installing(engine: FakeEngine) -> list[str]:
    """Each install copies the bundle's mylib into its result, as pip would install it; the run
    prints what the package it mounts says. Returns the values installed, in order."""
    installed: list[str] = []

    def behave(
        spec: ContainerSpec, out: Callable[[bytes], None], err: Callable[[bytes], None]
    ) -> ContainerExit:
        if spec.name.endswith("-deps"):
            bundle_dir = next(m.host for m in spec.mounts if m.container == BUNDLE_SOURCE)
            source = Path(bundle_dir) / "mylib" / "mylib" / "__init__.py"
            target = Path(next(m.host for m in spec.mounts if m.container == DEPS)) / "python" / "mylib"
            target.mkdir()
            (target / "__init__.py").write_bytes(source.read_bytes())
            installed.append(source.read_text())
            return ContainerExit(0)
        python = next(m.host for m in spec.mounts if m.container == "/opt/orch/deps/python")
        out(b"mylib says " + (Path(python) / "mylib" / "__init__.py").read_bytes())
        return ContainerExit(0)

    engine.behaviour = behave
    return installed


def said(api: httpx.Client, shown: dict) -> tuple[str, str]:
    return shown["deps"], api.get(f"/v1/runs/{shown['id']}/logs").json()["stdout"]


def test_a_package_of_the_bundle_is_installed_for_that_bundle_and_workspace_alone(
    api: httpx.Client, app: FastAPI, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """F5: a changed local package is installed again (not the first version's), and another
    workspace's same files run that workspace's own code, never the first workspace's build."""
    installed = installing(fake_engine)
    assert publish(api, "loc", bundle(tmp_path, local_package("v1"), "a1")).status_code == 201
    first = run(api, platform, "loc")
    assert said(api, first) == ("installed", "mylib says VALUE = 'v1'\n")
    assert run(api, platform, "loc")["deps"] == "cached"  # the same version: nothing to install
    assert publish(api, "loc", bundle(tmp_path, local_package("v2 CHANGED"), "a2")).status_code == 201
    changed = run(api, platform, "loc")
    assert said(api, changed) == ("installed", "mylib says VALUE = 'v2 CHANGED'\n")
    with platform.store.session() as s:
        _, token = workspaces.create_workspace(s, "other")
    with client_of(app, token) as other:
        assert publish(other, "loc", bundle(tmp_path, local_package("wsb own code"), "b1")).status_code == 201
        assert said(other, run(other, platform, "loc")) == (
            "installed",
            "mylib says VALUE = 'wsb own code'\n",
        )
        # Even the very same bundle: its install is that workspace's own.
        assert publish(other, "same", bundle(tmp_path, local_package("v1"), "b2")).status_code == 201
        assert said(other, run(other, platform, "same")) == ("installed", "mylib says VALUE = 'v1'\n")
    assert len(installed) == 4


def test_requirements_of_an_index_are_installed_once_for_every_workspace(
    api: httpx.Client, app: FastAPI, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    files = {"main.py": "", "requirements.txt": "six==1.16.0\n"}
    assert publish(api, "six", bundle(tmp_path, files, "a")).status_code == 201
    assert run(api, platform, "six")["deps"] == "installed"
    with platform.store.session() as s:
        _, token = workspaces.create_workspace(s, "other")
    with client_of(app, token) as other:
        assert (
            publish(other, "six", bundle(tmp_path, {**files, "main.py": "print(1)\n"}, "b")).status_code
            == 201
        )
        assert run(other, platform, "six")["deps"] == "cached"


def test_the_install_holds_its_own_memory_in_the_budget_and_the_run_its_own(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """F10: while the install runs, the budget holds its memory limit (install_memory), not the
    run's; while the run's sandbox runs, the run's."""
    platform.config = platform.config.with_values(install_memory=96 * MiB)
    platform.run_memory = Budget(1024 * MiB)
    held: list[tuple[str, int | None, int]] = []

    def behave(
        spec: ContainerSpec, out: Callable[[bytes], None], err: Callable[[bytes], None]
    ) -> ContainerExit:
        kind = "install" if spec.name.endswith("-deps") else "run"
        held.append((kind, spec.memory_bytes, platform.run_memory.used))
        return ContainerExit(0)

    fake_engine.behaviour = behave
    files = {"main.py": "", "requirements.txt": "six\n", "orch.yaml": "resources: {memory: 256Mi}\n"}
    assert publish(api, "mem", bundle(tmp_path, files)).status_code == 201
    assert run(api, platform, "mem")["status"] == "succeeded"
    assert held == [("install", 96 * MiB, 96 * MiB), ("run", 256 * MiB, 256 * MiB)]
    assert platform.run_memory.used == 0


def test_an_install_waits_for_its_memory_as_a_run_does(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform.config = platform.config.with_values(install_memory=768 * MiB)
    platform.run_memory = Budget(1024 * MiB)
    said: list[str] = []
    budget = platform.run_memory
    with budget.reserved(512 * MiB, lambda: False, lambda used: None):
        # Held by another run: the install asks for more than is left, says so and waits; a
        # cancel ends it there.
        files = {"main.py": "", "requirements.txt": "six\n"}
        assert publish(api, "wait", bundle(tmp_path, files)).status_code == 201
        created = api.post("/v1/runs", json={"agent": "wait"}).json()
        real = run_worker._waits_for_memory

        def then_cancel(*args: object) -> None:
            real(*args)  # type: ignore[arg-type]
            said.append("waiting")
            assert api.post(f"/v1/runs/{created['id']}/cancel").status_code == 200

        monkeypatch.setattr(run_worker, "_waits_for_memory", then_cancel)
        run_id = run_worker.claim(platform)
        assert run_id is not None
        run_worker.execute(platform, run_id)
    shown = api.get(f"/v1/runs/{created['id']}").json()
    assert (shown["status"], shown["reason"]) == ("cancelled", "cancelled before the agent started")
    log = api.get(f"/v1/runs/{created['id']}/logs").json()["log"]
    assert (
        "→ waiting for memory: other runs and sandboxes hold 512 MiB of the 1 GiB that sandboxes may "
        "have at once (run_memory), and its dependency install asks for 768 MiB"
    ) in log
    assert [c for c in fake_engine.containers if c.name.endswith("-deps")] == [] and said == ["waiting"]
    assert platform.run_memory.used == 0


def test_a_restart_sweeps_the_installs_a_killed_server_left(platform: Platform) -> None:
    """F7: KEY.tmp-PID-NS of an install the kill cut (its tmpfs still mounted) goes at start."""
    left = platform.config.home / "deps" / f"{'a' * 64}.tmp-{os.getpid() + 1}-1"
    (left / "deps").mkdir(parents=True)
    rootfs.mount("tmpfs", left / "deps", "tmpfs", 0, "size=1m")
    try:
        (left / "deps" / "partial").write_text("half an install")
        run_worker.recover(platform)
        assert not left.exists()
        assert not list(rootfs.mounts_under(platform.config.home))
    finally:
        for point in rootfs.mounts_under(platform.config.home):
            rootfs.umount(point)
