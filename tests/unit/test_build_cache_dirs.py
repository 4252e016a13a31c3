"""Cache mounts' directories kept within a size (builder/cache_dirs.py): least recently used
first, never one a build uses, never another platform's; and the worker's use of them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from orch import dockerfile
from orch.builder import cache_dirs
from orch.dockerfile import cache_mounts
from orch.engine.fake import FakeEngine
from orch.services import environments as envs
from orch.services.platform import Platform
from tests.conftest import drain

MiB = 2**20
MINE, THEIRS = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "buildah-cache"
    root.mkdir()
    monkeypatch.setattr(cache_dirs, "root", lambda: root)
    return root


def make(root: Path, name: str, size: int, used_at: float) -> Path:
    path = root / name
    path.mkdir()
    (path / "data").write_bytes(b"x" * size)
    os.utime(path, (used_at, used_at))
    return path


def test_least_recently_used_go_first_until_the_rest_fit(cache_root: Path, tmp_path: Path) -> None:
    old = make(cache_root, f"orch-{MINE}-ws1-old", 3 * MiB, 1000)
    middle = make(cache_root, f"orch-{MINE}-ws1-middle", 3 * MiB, 2000)
    new = make(cache_root, f"orch-{MINE}-ws2-new", 3 * MiB, 3000)
    theirs = make(cache_root, f"orch-{THEIRS}-ws1-old", 30 * MiB, 0)  # another platform's
    users = make(cache_root, "pip", 30 * MiB, 0)  # not orch's
    home = tmp_path / "home"
    assert cache_dirs.evict(home, MINE, 7 * MiB) == [old.name]
    assert cache_dirs.evict(home, MINE, 7 * MiB) == []
    assert cache_dirs.evict(home, MINE, 4 * MiB) == [middle.name]
    assert not old.exists() and not middle.exists()
    assert new.exists() and theirs.exists() and users.exists()


def test_a_directory_a_build_uses_is_kept_and_marked_used(cache_root: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    used = make(cache_root, f"orch-{MINE}-ws1-used", 3 * MiB, 1000)
    other = make(cache_root, f"orch-{MINE}-ws1-other", 3 * MiB, 2000)
    with cache_dirs.Use(home, [used.name, f"orch-{MINE}-ws1-not-made-yet"]):
        assert used.stat().st_mtime > 2000  # marked used when the build starts
        os.utime(used, (1000, 1000))
        assert cache_dirs.evict(home, MINE, 0) == [other.name]  # the least recently used is in use
        assert used.exists()
    assert used.stat().st_mtime > 2000  # and when it ends
    assert cache_dirs.evict(home, MINE, 0) == [used.name]
    assert not list(cache_dirs.locks(home).glob("*.use"))  # their lock files go with them


def test_a_build_waiting_for_a_directory_being_removed_gets_it_afresh(
    cache_root: Path, tmp_path: Path
) -> None:
    """A build that starts while its directory is being removed waits for the removal, then
    holds a lock that the next eviction sees (not the removed lock file's)."""
    home = tmp_path / "home"
    gone = make(cache_root, f"orch-{MINE}-ws1-gone", MiB, 1000)
    removing, waited = threading.Event(), threading.Event()
    real = cache_dirs.shutil.rmtree

    def slow_rmtree(path, ignore_errors=False):  # type: ignore[no-untyped-def]
        removing.set()
        assert waited.wait(5)
        real(path, ignore_errors=ignore_errors)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache_dirs.shutil, "rmtree", slow_rmtree)
        evicting = threading.Thread(target=cache_dirs.evict, args=(home, MINE, 0))
        evicting.start()
        assert removing.wait(5)
        uses: list[cache_dirs.Use] = []
        starting = threading.Thread(target=lambda: uses.append(cache_dirs.Use(home, [gone.name])))
        starting.start()
        # The build waits for the removal's lock, or (were there none) has taken its own.
        use_file = cache_dirs.locks(home) / f"{gone.name}.use"
        for _ in range(500):
            if not starting.is_alive() or _waiting_for(use_file):
                break
            time.sleep(0.01)
        waited.set()
        evicting.join(5)
        starting.join(5)
    assert not gone.exists()
    make(cache_root, gone.name, MiB, 1000)  # the build's step makes it again
    assert cache_dirs.evict(home, MINE, 0) == []
    uses[0].release()


def _waiting_for(path: Path) -> bool:
    """Whether a lock request on `path` waits (/proc/locks: `->` lines)."""
    try:
        inode = path.stat().st_ino
    except FileNotFoundError:
        return False
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and f":{inode} " in line for line in lines)


def test_ids_are_those_the_rendered_containerfile_mounts() -> None:
    text = (
        "FROM e2bdev/code-interpreter:latest\n"
        "RUN --mount=type=cache,target=/root/.cache/pip pip install x\n"
        "RUN --mount=type=cache,id=npm,target=/n --mount=type=tmpfs,target=/t npm i\n"
        "RUN --mount=type=cache,target=/root/.cache/pip echo again\n"
    )
    validation = dockerfile.validate(text)
    owner = dockerfile.cache_owner(MINE, "ws_1")
    ids = cache_mounts.ids(validation.instructions, owner)
    rendered = dockerfile.render_containerfile(validation.instructions, "base", owner)
    assert len(ids) == 2 and all(f"id={i}" in rendered for i in ids)
    assert all(i.startswith(cache_mounts.prefix(MINE)) for i in ids)
    assert (
        cache_mounts.ids(
            dockerfile.validate("FROM e2bdev/code-interpreter:latest\nRUN x\n").instructions, owner
        )
        == []
    )


def test_a_build_keeps_the_platforms_cache_mounts_within_their_size(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, cache_root: Path
) -> None:
    """After a build that mounted a cache, the platform's least recently used directories go
    until the rest fit; during it, the one it mounts is kept whatever its age."""
    platform.config = platform.config.with_values(cache_mounts_size=16 * MiB)
    text = "FROM e2bdev/code-interpreter:latest\nRUN --mount=type=cache,target=/c echo hi\n"
    validation = dockerfile.validate(text)
    (mounted,) = cache_mounts.ids(
        validation.instructions, dockerfile.cache_owner(platform.instance, workspace[0])
    )
    mine = make(cache_root, mounted, 10 * MiB, 1000)
    stale = make(cache_root, f"orch-{platform.instance}-other-ws-stale", 10 * MiB, 2000)
    theirs = make(cache_root, f"orch-{THEIRS}-ws-old", 10 * MiB, 0)
    seen: list[bool] = []
    real = fake_engine.build

    def build(request, on_output, on_start=None, should_stop=None):  # type: ignore[no-untyped-def]
        # Another build's end, meanwhile: the oldest is this build's, which it uses.
        cache_dirs.evict(platform.config.home, platform.instance, 0)
        seen.append(mine.exists())
        return real(request, on_output, on_start, should_stop)

    fake_engine.build = build  # type: ignore[method-assign]
    envs.create(platform, workspace[0], "cached", text)
    drain(platform)
    assert seen == [True]
    assert not stale.exists() and theirs.exists()
    assert mine.exists() and mine.stat().st_mtime > 2000  # used last


def test_the_server_start_keeps_them_within_their_size(platform: Platform, cache_root: Path) -> None:
    from orch.workers import builds

    platform.config = platform.config.with_values(cache_mounts_size=16 * MiB)
    old = make(cache_root, f"orch-{platform.instance}-ws-old", 10 * MiB, 1000)
    new = make(cache_root, f"orch-{platform.instance}-ws-new", 10 * MiB, 2000)
    builds.recover(platform)
    assert not old.exists() and new.exists()
