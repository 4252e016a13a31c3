"""The pool of network namespaces gives used ones back without letting them pile up (a fake
destroy: the real one is in tests/integration/test_runc_launcher.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orch.sandbox import netns
from orch.sandbox.netns import BEHIND, Netns, Pool


def test_sandboxes_ending_faster_than_the_destroyer_destroy_their_own_namespaces(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stuck = threading.Event()  # the background destroyer, slow as in a burst
    destroyed: list[tuple[str, str]] = []

    def destroy(name: str, state_dir: Path) -> list[str]:
        if threading.current_thread().name == "netns-release":
            stuck.wait(10)
        destroyed.append((name, threading.current_thread().name))
        return []

    monkeypatch.setattr(netns, "destroy", destroy)
    pool = Pool("orch-sandbox", "t-", size=0, state_dir=tmp_path)
    names = [f"t-net-{i}" for i in range(BEHIND + 3)]
    for name in names:
        pool.release(Netns(name=name))

    # Past BEHIND waiting, each caller destroyed its own at once; nothing waits beyond that.
    assert destroyed == [(name, threading.current_thread().name) for name in names[BEHIND:]]
    stuck.set()
    pool.wait(10)
    assert sorted(name for name, _ in destroyed) == sorted(names)
    assert {thread for name, thread in destroyed if name in names[:BEHIND]} == {"netns-release"}
