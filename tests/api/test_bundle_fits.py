"""A bundle larger than the working directory its memory limit gives (a tmpfs of half of it): the
run fails before its sandbox starts, saying so, rather than with the exit code of the copy's
"No space left on device"; publish warns (workers/runs.py, services/agents.py, sandbox/spec.py)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from orch.bundle import pack_directory
from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_UPLOAD_BYTES
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from tests.api.test_agents_runs import publish, run

MiB = 1024**2
SMALL = "resources: {memory: 32Mi}\n"  # a working directory of 16 MiB: 4,096 pages of 4 KiB


def _files(root: Path, tiny: int) -> bytes:
    """main.py, orch.yaml, a file of 4,093 pages less a few bytes and `tiny` one-byte files: each
    takes whole pages on a tmpfs, so bytes that would fit the 4,096 pages may not."""
    root.mkdir()
    (root / "main.py").write_text("print(1)\n")
    (root / "orch.yaml").write_text(SMALL)
    (root / "data").write_bytes(bytes(4093 * 4096 - 100))
    for i in range(tiny):
        (root / f"f{i}").write_text("x")
    return pack_directory(root).data


def test_a_bundle_its_working_directory_cannot_hold_fails_before_the_sandbox(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    assert os.sysconf("SC_PAGE_SIZE") == 4096
    data = _files(tmp_path / "big", tiny=2)  # 4,097 pages, of fewer than 16 MiB of bytes
    resp = publish(api, "big", data)
    assert resp.status_code == 201, resp.text
    said = (
        "The bundle (16.004 MiB) does not fit the 16 MiB working directory that a memory limit of "
        "32 MiB gives (half the memory limit)."
    )
    notes = resp.json()["notes"]
    assert len(notes) == 1 and notes[0].startswith(said), notes
    assert "Runs of this version will fail before the agent starts." in notes[0]
    assert "Raise resources.memory in orch.yaml, or make the bundle smaller (.orchignore)" in notes[0]

    r = run(api, platform, "big")
    assert (r["status"], r["exit_code"], r["reason"]) == ("failed", None, said), r
    assert fake_engine.containers == []  # no sandbox started, no install either
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert "Raise resources.memory in orch.yaml" in str(logs)


def test_a_bundle_that_fits_runs_and_publishes_without_a_note(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    resp = publish(api, "fits", _files(tmp_path / "fits", tiny=1))  # 4,096 pages: just fits
    assert resp.status_code == 201 and resp.json()["notes"] == [], resp.text
    r = run(api, platform, "fits")
    assert r["status"] == "succeeded", r
    assert len(fake_engine.containers) == 1


def test_a_bundles_links_take_no_room_of_their_own(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    root = tmp_path / "linked"
    root.mkdir()
    (root / "main.py").write_text("print(1)\n")
    (root / "orch.yaml").write_text(SMALL)
    (root / "data").write_bytes(bytes(9 * MiB))
    (root / "alias").symlink_to("data")  # copied as a link: 9 MiB, not 18
    resp = publish(api, "linked", pack_directory(root).data)
    assert resp.status_code == 201 and resp.json()["notes"] == [], resp.text
    assert run(api, platform, "linked")["status"] == "succeeded"


def test_a_small_memory_limit_gives_a_working_directory_of_16_mib_at_least(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    root = tmp_path / "dflt"
    root.mkdir()
    (root / "main.py").write_text("print(1)\n")
    (root / "orch.yaml").write_text("resources: {memory: 16Mi}\n")  # 16 MiB at least, not 8
    (root / "data").write_bytes(bytes(10 * MiB))
    resp = publish(api, "dflt", pack_directory(root).data)
    assert resp.status_code == 201 and resp.json()["notes"] == [], resp.text
    assert run(api, platform, "dflt")["status"] == "succeeded"
    (root / "more").write_bytes(bytes(7 * MiB))
    resp = publish(api, "dflt", pack_directory(root).data)
    assert resp.json()["notes"][0].startswith(
        "The bundle (17 MiB) does not fit the 16 MiB working directory that a memory limit of "
        "16 MiB gives (at least 16 MiB)."
    ), resp.text
    r = run(api, platform, "dflt")
    assert r["status"] == "failed" and r["reason"].startswith("The bundle (17 MiB)"), r


def test_files_just_within_the_bound_that_do_not_compress_are_published(
    api: httpx.Client, tmp_path: Path
) -> None:
    """Found by a tester: 52,428,000 bytes of random data (under the 50 MiB of files) packed to
    more than 50 MiB, and the server refused the upload ("The upload is over the 50 MiB limit.")
    though `orch publish` had checked the files."""
    root = tmp_path / "big"
    root.mkdir()
    (root / "main.py").write_text("print(1)\n")
    (root / "blob").write_bytes(os.urandom(MAX_BUNDLE_BYTES - 1000))
    data = pack_directory(root).data
    assert len(data) > MAX_BUNDLE_BYTES  # what the server's bound was
    resp = publish(api, "big", data)
    assert resp.status_code == 201, resp.text


def test_an_upload_larger_than_any_bundle_packs_to_is_refused_as_it_streams(api: httpx.Client) -> None:
    resp = publish(api, "big", b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert resp.status_code == 400
    assert resp.json()["message"] == "The upload is larger than a bundle of 50 MiB of files packs to."
    assert api.get("/v1/agents").json() == []
