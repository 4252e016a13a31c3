"""The Podman engine's housekeeping on the real machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.builder import base_images
from orch.engine import PodmanEngine
from orch.engine.base import BuildRequest
from orch.engine.podman_run import CGROUP_ROOT, cgroup_parent
from orch.errors import BuildFailed
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


def working_containers(owner: str) -> set[str]:
    """Buildah's working containers of `owner`'s builds (its owner argument), whatever else runs."""
    graph = subprocess.run(
        ["podman", "info", "--format", "{{.Store.GraphRoot}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    found = set()
    for cid in external_ids():
        for state in Path(graph).glob(f"*-containers/{cid}*/userdata/buildah.json"):
            with contextlib.suppress(OSError, ValueError):
                value = json.loads(state.read_text()).get("Args", {}).get("ORCH_BUILD_OWNER", "")
                if value.startswith(f"{owner}/"):
                    found.add(cid)
    return found


def build_addresses() -> set[str]:
    """The RUN steps' address reservations on the sandbox network, and their NAT rules."""
    held = set(cni.reservations(cni.load("orch-sandbox"), "buildah-"))
    nat = subprocess.run(["iptables", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True)
    return held | {
        f"nat {line.split('id: ')[1]}" for line in nat.stdout.splitlines() if 'id: \\"buildah-' in line
    }


def running(marker: str) -> list[str]:
    """The command lines of the processes whose command line holds `marker`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in text and "pytest" not in text:
                found.append(text)
    return found


def sleeper(marker: str) -> str:
    """A Containerfile whose RUN step says `started`, then sleeps for `marker` (digits) seconds."""
    return f"FROM {base_images.image_tag('python')}\nRUN echo started && sleep {marker}\n"


def killed_once_started(script: str, *args: str) -> None:
    """Run python `script` with `args` until it prints `started` (its build's RUN step began),
    then kill it, as a server is killed during a build."""
    server = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    for line in server.stdout:
        if line.strip() == "started":
            break
    server.kill()
    server.wait(10)
    server.stdout.close()


# A server killed during a build: its `podman build` goes on without it, in its own session.
KILLED_SERVER = """
import sys
from orch.engine import PodmanEngine
from orch.engine.base import BuildRequest
request = BuildRequest(containerfile=sys.argv[1], tag="localhost/orch-enginetest/killed:1", no_cache=True,
                       owner="enginetest-owner", timeout=600)
PodmanEngine().build(request, lambda line: print(line, flush=True))
"""


@pytest.mark.serial  # no other build may run: their steps' addresses look alike
def test_a_stopped_servers_build_is_ended_by_its_owner() -> None:
    """A server killed mid-build leaves its `podman build` running, and the RUN step's processes
    (in a session and a cgroup of their own) with it; whatever the store still knows of the
    build (its row may have been deleted with its environment), the owner's next start ends
    them, then removes Buildah's working container, the step's address and the temporary
    directory. Another owner's sweep touches none of it."""
    engine = PodmanEngine()
    engine.remove_build_leftovers("enginetest-owner")  # an earlier test's, killed half-way
    # An earlier killed build on this host may have left its own: only this build's count.
    held_before = build_addresses()
    marker = str(7_000_000 + os.getpid())
    try:
        killed_once_started(KILLED_SERVER, sleeper(marker))
        assert running(f"sleep {marker}") and running("ORCH_BUILD_OWNER=enginetest-owner/")
        assert engine.remove_build_leftovers("someone-else") == 0
        assert running(f"sleep {marker}") and len(working_containers("enginetest-owner")) == 1
        mine = Path(tempfile.mkdtemp(prefix="orch-build-enginetest-owner-"))
        theirs = Path(tempfile.mkdtemp(prefix="orch-build-someone-else-"))
        try:
            assert engine.remove_build_leftovers("enginetest-owner") == 1
            assert not running(f"sleep {marker}") and not running("ORCH_BUILD_OWNER=enginetest-owner/")
            assert not working_containers("enginetest-owner")
            assert not mine.exists() and theirs.exists()
            assert build_addresses() - held_before == set()
        finally:
            shutil.rmtree(theirs, ignore_errors=True)
    finally:
        engine.remove_build_leftovers("enginetest-owner")


@pytest.mark.serial  # no other build may run: their steps' addresses look alike
@pytest.mark.parametrize("how", ["timeout", "asked"])
def test_a_stopped_build_leaves_nothing_running(how: str) -> None:
    """At its timeout, or asked to stop (its environment deleted), a build ends everything it
    started: before, the RUN step's processes went on for good, reparented to PID 1, and its
    working container stayed until the next start."""
    engine = PodmanEngine()
    held_before = build_addresses()
    marker = str(7_100_000 + os.getpid() + (0 if how == "timeout" else 1))
    started = threading.Event()
    request = BuildRequest(
        containerfile=sleeper(marker),
        tag="localhost/orch-enginetest/stopped:1",
        no_cache=True,
        owner="enginetest-owner",
        timeout=6 if how == "timeout" else 120,
    )

    def out(line: str) -> None:
        if line == "started":
            started.set()

    began = time.monotonic()
    with pytest.raises(BuildFailed) as failed:
        engine.build(request, out, should_stop=started.is_set if how == "asked" else None)
    assert time.monotonic() - began < 60
    assert ("stopped after 6 s" in failed.value.message) == (how == "timeout")
    assert failed.value.details.get("stopped", False) == (how == "asked")
    assert not running(f"sleep {marker}")
    assert not working_containers("enginetest-owner")
    assert build_addresses() - held_before == set()
    assert engine.inspect_image(request.tag) is None


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
