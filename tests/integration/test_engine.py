"""The Podman engine's housekeeping on the real machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.builder import base_images
from orch.engine import PodmanEngine
from orch.engine.base import BuildRequest
from orch.engine.podman_run import CGROUP_ROOT, cgroup_parent
from orch.sandbox import cni

pytestmark = pytest.mark.integration

PREFIX = "orch-enginetest-"


@pytest.fixture
def cgroups() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        for path in CGROUP_ROOT.glob(f"*/{cgroup_parent(name).lstrip('/')}"):
            path.rmdir()
    subprocess.run(["podman", "rm", "-f", f"{PREFIX}live"], capture_output=True, check=False)


def make_parent(name: str) -> None:
    (CGROUP_ROOT / "memory" / cgroup_parent(name).lstrip("/")).mkdir()
    (CGROUP_ROOT / "pids" / cgroup_parent(name).lstrip("/")).mkdir()


def test_leftover_cgroups_of_gone_containers_are_removed(cgroups: list[str]) -> None:
    """A server killed between `podman rm` and removing the sandbox's parent cgroup leaves the
    cgroup behind: the sweep removes it, and leaves those of containers that still exist."""
    image = subprocess.run(
        ["podman", "images", "--format", "{{.Id}}", "--filter", "reference=localhost/orch/python"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    live = ["podman", "create", "--name", f"{PREFIX}live", image, "true"]
    subprocess.run(live, capture_output=True, check=True)
    for name in (f"{PREFIX}gone", f"{PREFIX}live", "orch-other-gone"):
        make_parent(name)
        cgroups.append(name)
    assert PodmanEngine().remove_leftovers(PREFIX) == 1
    exists = {n: (CGROUP_ROOT / "memory" / cgroup_parent(n).lstrip("/")).is_dir() for n in cgroups}
    # The gone container's cgroup is removed; the live one's, and another prefix's, are kept.
    assert exists == {f"{PREFIX}gone": False, f"{PREFIX}live": True, "orch-other-gone": True}
    assert not (CGROUP_ROOT / "pids" / cgroup_parent(f"{PREFIX}gone").lstrip("/")).exists()
    cgroups.remove(f"{PREFIX}gone")


def external_ids() -> set[str]:
    out = subprocess.run(
        ["podman", "ps", "-a", "--external", "--format", "{{.ID}}"], capture_output=True, text=True
    )
    return set(out.stdout.split())


def build_addresses() -> set[str]:
    """The RUN steps' address reservations on the sandbox network, and their NAT rules."""
    held = set(cni.reservations(cni.load("orch-sandbox"), "buildah-"))
    nat = subprocess.run(["iptables", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True)
    return held | {
        f"nat {line.split('id: ')[1]}" for line in nat.stdout.splitlines() if 'id: \\"buildah-' in line
    }


@pytest.mark.serial  # no other build may run: their steps' addresses look alike
def test_a_killed_builds_working_container_is_removed_by_its_owner() -> None:
    """SIGKILL a `podman build` mid-step (as a killed server's recovery does): Buildah's working
    container stays behind; the owner's sweep removes it, another owner's does not."""
    engine = PodmanEngine()
    before = external_ids()
    # An earlier killed build on this host may have left its own: only this build's count.
    held_before = build_addresses()
    started = threading.Event()
    pids: list[int] = []
    request = BuildRequest(
        containerfile=f"FROM {base_images.image_tag('python')}\nRUN echo started && sleep 60\n",
        tag="localhost/orch-enginetest/killed:1",
        no_cache=True,
        owner="enginetest-owner",
    )

    def out(line: str) -> None:
        if line == "started":
            started.set()

    def build() -> None:
        with contextlib.suppress(Exception):
            engine.build(request, out, pids.append)

    thread = threading.Thread(target=build)
    thread.start()
    assert started.wait(60), "the build never reached its RUN step"
    os.killpg(pids[0], signal.SIGKILL)
    thread.join(30)
    left = external_ids() - before
    assert len(left) == 1, left
    # Its RUN step was never detached from the network: its address stays reserved, its NAT too.
    assert len(build_addresses() - held_before) == 2, build_addresses()
    assert engine.remove_build_leftovers("someone-else") == 0
    assert external_ids() - before == left
    # A SIGKILLed server also leaves its build's temporary directory (made here as a build names it).
    mine = Path(tempfile.mkdtemp(prefix="orch-build-enginetest-owner-"))
    theirs = Path(tempfile.mkdtemp(prefix="orch-build-someone-else-"))
    try:
        assert engine.remove_build_leftovers("enginetest-owner") == 1
        assert not external_ids() - before
        assert not mine.exists() and theirs.exists()
        assert build_addresses() - held_before == set()
    finally:
        shutil.rmtree(theirs, ignore_errors=True)


def test_an_image_whose_writer_was_killed_half_way_is_removed_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the faults suite: a Podman killed while it commits an image leaves an entry
    without its manifest, and every `podman images` fails on it until it is removed (Podman's
    message says so). The engine removes it and lists the rest. In a Podman storage of the
    test's own, so no other test's listing meets the broken entry."""
    graph = tmp_path / "graph"
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{graph}"\nrunroot = "{tmp_path / "run"}"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    (tmp_path / "f").write_text("hi\n")
    subprocess.run(["tar", "-C", str(tmp_path), "-cf", str(tmp_path / "x.tar"), "f"], check=True)

    def imported(tag: str) -> str:
        out = subprocess.run(
            ["podman", "import", "-q", str(tmp_path / "x.tar"), tag], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().removeprefix("sha256:")

    whole = imported("localhost/enginetest/whole:1")
    subprocess.run(["podman", "tag", whole, "localhost/enginetest/other:1"], check=True)
    (tmp_path / "f").write_text("another\n")
    subprocess.run(["tar", "-C", str(tmp_path), "-cf", str(tmp_path / "x.tar"), "f"], check=True)
    broken = imported("localhost/enginetest/broken:1")
    assert broken != whole
    try:
        # What the killed writer left: the manifest still in its temporary file, not named.
        entry = graph / "overlay-images" / broken
        (entry / "manifest").rename(entry / ".tmp-manifest1")
        index = graph / "overlay-images" / "images.json"
        images = json.loads(index.read_text())
        for image in images:
            if image["id"] == broken:
                image["big-data-names"].remove("manifest")
        index.write_text(json.dumps(images))
        listing = subprocess.run(["podman", "images"], capture_output=True, text=True)
        assert listing.returncode != 0 and "consider removing the image" in listing.stderr

        found = PodmanEngine().images({})
        assert {i.id for i in found} == {whole}
        assert {tag for i in found for tag in i.tags} == {
            "localhost/enginetest/other:1",
            "localhost/enginetest/whole:1",
        }
        assert subprocess.run(["podman", "images"], capture_output=True).returncode == 0
    finally:
        subprocess.run(["podman", "rmi", "--all", "--force"], capture_output=True)
