"""Bundles live in the store (services/bundles.py): any machine extracts one at its first use
there; archives that servers before kept as files move in at start."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.errors import NotFound
from orch.services import bundles
from orch.services.platform import Platform
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
