"""An install of dependency files that several workspaces' runs share (the cache is keyed by the
files and the image): a tester's workspace set `cpus: 0.01`, and every other workspace's run of
the same requirements.txt waited in `starting` for its install, silent, and could not be
cancelled until it ended (sandbox/deps.py `ensure`, deps_cache.install_lock)."""

from __future__ import annotations

import fcntl
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.sandbox import deps, deps_cache
from tests.unit.test_sandbox import install_in

REQUIREMENTS = b"requests==2.32.3\n"


def test_a_run_waiting_for_an_install_of_its_files_says_so_and_its_cancel_ends_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deps_cache, "WAIT_LOOK", 0.01)
    key = deps.cache_key({"requirements.txt": REQUIREMENTS}, "img1", workspace_id="ws_a", bundle_sha="b1")
    (tmp_path / "cache").mkdir()
    logged: list[str] = []
    cancel = threading.Event()
    ensure = install_in(tmp_path, FakeEngine(), REQUIREMENTS, logged.append)
    ended: list[BaseException] = []

    def waits() -> None:
        try:
            ensure(should_stop=cancel.is_set)
        except BaseException as e:  # what ended it, for the test
            ended.append(e)

    with deps_cache.lock_path(tmp_path / "cache", key).open("a") as other:  # another's install
        fcntl.flock(other, fcntl.LOCK_EX)
        waiting = threading.Thread(target=waits, daemon=True)
        waiting.start()
        for _ in range(500):
            if logged:
                break
            threading.Event().wait(0.01)
        assert logged == ["requirements.txt: waiting for an install of the same files under way"]
        cancel.set()
        waiting.join(10)  # a bound: before, it waited for the other install's end
        assert not waiting.is_alive(), "the cancel waited for the other install"
    assert [type(e) for e in ended] == [deps.Cancelled]
    assert logged[-1] == "requirements.txt: cancelled, nothing installed"


@pytest.mark.parametrize(("given", "got"), [(0.01, 1.0), (2.0, 2.0), (None, None)])
def test_an_install_gets_a_whole_cpu_whatever_the_cpus_of_the_run_that_came_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: float | None, got: float | None
) -> None:
    monkeypatch.setattr(os, "chown", lambda *a: None)
    engine = FakeEngine()
    seen: list[ContainerSpec] = []
    engine.behaviour = lambda spec, out, err: seen.append(spec) or ContainerExit(0)
    ensure = install_in(tmp_path, engine, REQUIREMENTS, lambda _line: None)
    base = ensure.keywords["base_spec"]
    ensure(base_spec=replace(base, cpus=given)).release()
    assert [s.cpus for s in seen] == [got]
