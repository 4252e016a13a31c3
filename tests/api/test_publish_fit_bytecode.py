"""Publish's note that a bundle is too large for its runs' working directory counts the bytecode
that extraction compiles for its modules (orch.bundle.bytecode), as the run's check does: a bundle
whose files just fit, but not with their bytecode, was published with no note and every run of
it failed (found by a tester; services/agents.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
import pytest

from orch.bundle import pack_directory
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from tests.api.test_agents_runs import publish, run
from tests.api.test_bundle_fits import SMALL


def _modules(root: Path, pages: int) -> bytes:
    """main.py, lib.py (each compiled at extraction: a page of bytecode each), orch.yaml and a
    file of `pages` pages less a few bytes, in the 4,096 pages of SMALL's working directory."""
    root.mkdir()
    (root / "main.py").write_text("import lib\n\nlib.hello()\n")
    (root / "lib.py").write_text("def hello() -> None:\n    print('hi')\n")
    (root / "orch.yaml").write_text(SMALL)
    (root / "data").write_bytes(bytes(pages * 4096 - 100))
    return pack_directory(root).data


def test_publish_counts_the_bytecode_a_runs_copy_holds(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    assert os.sysconf("SC_PAGE_SIZE") == 4096
    resp = publish(api, "mods", _modules(tmp_path / "mods", 4093))  # 4,096 pages, 4,098 compiled
    assert resp.status_code == 201, resp.text
    notes = resp.json()["notes"]
    said = (
        "The bundle (16.01 MiB) does not fit the 16 MiB working directory that a memory limit of "
        "32 MiB gives (half the memory limit)."
    )
    assert len(notes) == 1 and notes[0].startswith(said), notes
    assert "Runs of this version will fail before the agent starts." in notes[0]

    r = run(api, platform, "mods")  # the same sentence, the same size: the two checks agree
    assert (r["status"], r["exit_code"], r["reason"]) == ("failed", None, said), r
    assert fake_engine.containers == []
    assert not list(Path(tempfile.gettempdir()).glob("orch-publish-*"))  # none left


def test_a_bundle_that_fits_with_its_bytecode_publishes_without_a_note_and_runs(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    resp = publish(api, "mods", _modules(tmp_path / "mods", 4091))  # 4,096 pages compiled
    assert resp.status_code == 201 and resp.json()["notes"] == [], resp.text
    r = run(api, platform, "mods")
    assert r["status"] == "succeeded", r
    assert len(fake_engine.containers) == 1


def test_a_bundle_far_below_the_limit_is_not_extracted_to_count_it(
    api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every publish of two modules or more was extracted and compiled: 1,500 modules took 25 s
    and the CLI gave up waiting (found by a tester). Far from the limit, it fits without that."""
    from orch.services import agents

    def no_extraction(info: object) -> int:
        raise AssertionError("extracted to count a bundle far below its limit")

    monkeypatch.setattr(agents, "_extracted_copy_bytes", no_extraction)
    root = tmp_path / "many"
    root.mkdir()
    for i in range(50):
        (root / f"m{i}.py").write_text(f"X = {i}\n")
    (root / "main.py").write_text("print('ok')\n")
    resp = publish(api, "many", pack_directory(root).data)
    assert resp.status_code == 201 and resp.json()["notes"] == [], resp.text


def test_a_bundle_whose_bytecode_is_larger_than_its_modules_runs_where_its_files_fit(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """Far enough from the limit, publish counts each module as much again for its bytecode; a
    module of terse code compiled to five times its size, so a bundle published with no note
    failed every run, its copy with bytecode too large (found by a tester: 46 MB of modules,
    238 MiB of bytecode). Extraction keeps no cache larger than its module: the run starts."""
    assert os.sysconf("SC_PAGE_SIZE") == 4096
    root = tmp_path / "terse"
    root.mkdir()
    (root / "main.py").write_text("import terse\n")
    (root / "terse.py").write_text("f(x, y)\n" * 20_000)  # 40 pages; its bytecode ~190
    (root / "orch.yaml").write_text(SMALL)
    # 4,096 pages less main.py, terse.py, orch.yaml and each module as much again: 4,010 fit
    # with what publish counts, and not with terse.py's real bytecode.
    (root / "data").write_bytes(bytes(4_000 * 4096))
    resp = publish(api, "terse", pack_directory(root).data)
    assert resp.status_code == 201 and resp.json()["notes"] == [], resp.text
    r = run(api, platform, "terse")
    assert r["status"] == "succeeded", r
    assert len(fake_engine.containers) == 1
