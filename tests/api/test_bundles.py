"""Bundles live in the store (services/bundles.py): any machine extracts one at its first use
there; archives that servers before kept as files move in at start."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from orch.engine.fake import FakeEngine
from orch.errors import NotFound
from orch.services import bundles
from orch.services.platform import Platform
from orch.store.schema import BundleRow
from tests.api.test_agents_runs import bundle, publish
from tests.conftest import make_platform


def test_any_machine_of_the_store_extracts_a_published_bundle(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, database_url: str, tmp_path: Path
) -> None:
    data = bundle(tmp_path, {"main.py": "print('hi')\n", "notes.txt": "kept\n"})
    assert publish(api, "hello", data).status_code == 201
    sha = hashlib.sha256(data).hexdigest()
    assert not list((platform.config.home / "bundles").glob("*.tar.gz"))  # nothing on this disk
    other = make_platform(tmp_path / "node", fake_engine, database_url=database_url)
    try:
        there = bundles.extracted(other, sha)
        assert there == tmp_path / "node" / "bundles" / sha
        assert (there / "main.py").read_text() == "print('hi')\n" and (
            there / "notes.txt"
        ).read_text() == "kept\n"
        assert bundles.extracted(other, sha) == there  # once
        with pytest.raises(NotFound):
            bundles.extracted(other, "0" * 64)
    finally:
        other.store.dispose()


def test_archives_of_an_earlier_server_move_into_the_store(platform: Platform, tmp_path: Path) -> None:
    data = bundle(tmp_path, {"main.py": "print('old')\n"})
    sha = hashlib.sha256(data).hexdigest()
    where = platform.config.home / "bundles"
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{sha}.tar.gz").write_bytes(data)
    assert bundles.import_files(platform) == 1
    assert not list(where.glob("*.tar.gz")) and bundles.stored(platform, sha)
    assert (bundles.extracted(platform, sha) / "main.py").read_text() == "print('old')\n"
    (where / f"{sha}.tar.gz").write_bytes(data)  # stopped before the file went: not stored twice
    assert bundles.import_files(platform) == 0
    assert not list(where.glob("*.tar.gz"))


ON_POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@ON_POSTGRESQL
def test_a_removal_on_another_machine_waits_for_a_publish_of_its_bundle(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A publish holds its bundle's row from storing it to the commit of the version that refers
    to it: another machine's removal of unused bundles (an agent delete there) waits for that
    commit, then finds the bundle used and leaves it. (One machine's file lock can't hold
    another machine's removal.)"""
    data = bundle(tmp_path, {"main.py": "print('hi')\n"})
    sha = hashlib.sha256(data).hexdigest()
    real = bundles.keep
    with platform.store.session() as s:
        real(s, sha, data)  # there already, used by nothing (its agent was deleted)
    kept, go = threading.Event(), threading.Event()

    def paused(s: Session, sha256: str, data: bytes) -> None:
        real(s, sha256, data)
        kept.set()
        assert go.wait(10)

    monkeypatch.setattr(bundles, "keep", paused)
    answers: list[int] = []
    publishing = threading.Thread(target=lambda: answers.append(publish(api, "hello", data).status_code))
    publishing.start()
    assert kept.wait(10)
    other = make_platform(tmp_path / "elsewhere", fake_engine, database_url=database_url)
    try:
        removing = threading.Thread(target=bundles.remove_unused, args=(other, [sha]))
        removing.start()
        removing.join(1.0)
        assert removing.is_alive(), "the removal did not wait for the publish"
        go.set()
        publishing.join(10)
        removing.join(10)
        assert answers == [201] and not removing.is_alive()
        assert bundles.stored(other, sha)
        assert bundles.extracted(other, sha).joinpath("main.py").read_text() == "print('hi')\n"
    finally:
        go.set()
        other.store.dispose()


@ON_POSTGRESQL
def test_a_bundle_removed_while_it_is_kept_is_stored_again(platform: Platform, tmp_path: Path) -> None:
    data = bundle(tmp_path, {"main.py": ""})
    sha = hashlib.sha256(data).hexdigest()
    with platform.store.session() as s:
        bundles.keep(s, sha, data)
    done = threading.Event()

    def keep_it() -> None:
        with platform.store.session() as s:
            bundles.keep(s, sha, data)
        done.set()

    with platform.store.session() as s:  # a removal under way: it holds the row, not committed
        s.execute(select(BundleRow.sha256).where(BundleRow.sha256 == sha).with_for_update())
        s.execute(delete(BundleRow).where(BundleRow.sha256 == sha))
        keeping = threading.Thread(target=keep_it)
        keeping.start()
        assert not done.wait(0.5), "keep did not wait for the removal"
    keeping.join(10)
    assert done.is_set() and bundles.stored(platform, sha)
