"""What builds write to the host's disk, bounded on real Podman: while a build runs (its working
container's writable layer, engine/build_disk.py), and across builds (cache mounts'
directories, builder/cache_dirs.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orch.builder import base_images, cache_dirs
from orch.dockerfile import cache_mounts
from orch.engine import PodmanEngine, build_disk
from orch.engine.base import BuildRequest
from orch.errors import BuildFailed
from tests.integration.test_engine import running, working_containers

pytestmark = pytest.mark.integration

OWNER = "enginetest-disk"


def test_a_build_that_writes_past_the_bound_is_stopped_while_it_runs(monkeypatch) -> None:
    """A RUN step that writes 200 MiB in pieces, then sleeps, with a 50 MiB bound: the build is
    stopped as its working container passes the bound, long before the step ends, with a
    sentence naming the bound and the fix; its processes, its working container and what it
    wrote are gone."""
    engine = PodmanEngine()
    engine.remove_build_leftovers(OWNER)  # an earlier run's, killed half-way
    measured: list[Path] = []
    real = build_disk.Storage.working_layers

    def recorded(self, owner_arg, value, skip=None):  # type: ignore[no-untyped-def]
        found = real(self, owner_arg, value, skip)
        measured.extend(d for d in found if d not in measured)
        return found

    monkeypatch.setattr(build_disk.Storage, "working_layers", recorded)
    marker = str(7_200_000 + os.getpid())
    step = (
        "for i in $(seq 20); do head -c 10485760 /dev/zero > /big$i; sleep 0.5; done; "
        f"echo wrote-all; sleep {marker}"
    )
    request = BuildRequest(
        containerfile=f"FROM {base_images.image_tag('python')}\nRUN {step}\n",
        tag="localhost/orch-enginetest/disk:1",
        no_cache=True,
        owner=OWNER,
        timeout=600,
        max_size=50 * 2**20,
    )
    lines: list[str] = []
    try:
        with pytest.raises(BuildFailed) as failed:
            engine.build(request, lines.append)
        assert failed.value.message.startswith("The build was stopped: its steps had written ")
        assert failed.value.message.endswith("more than the 50 MiB that ORCH_BUILD_MAX_SIZE allows")
        assert "raise ORCH_BUILD_MAX_SIZE" in failed.value.fix
        assert "wrote-all" not in lines  # stopped during its writes, not after its step
        assert measured  # its working container's layer was found, and measured
        assert not any(d.exists() for d in measured)  # what it wrote is gone
        assert not working_containers(OWNER)
        assert not running(f"sleep {marker}") and not running("ORCH_BUILD_OWNER=enginetest-disk/")
        assert engine.inspect_image(request.tag) is None
    finally:
        engine.remove_build_leftovers(OWNER)


def test_a_cache_mounts_directory_is_removed_least_recently_used_unless_in_use(tmp_path: Path) -> None:
    """The directory Buildah keeps a cache mount's content in is where cache_dirs looks for it;
    a build's Use keeps it, and once released, eviction to 0 bytes removes it."""
    engine = PodmanEngine()
    instance = f"cdt{os.getpid():09d}"[:12]
    owner = cache_mounts.owner(instance, "ws_cachetest")
    flag = cache_mounts.private("--mount=type=cache,target=/c", owner)
    (cache_id,) = (f.split("=", 1)[1] for f in flag.split(",") if f.startswith("id="))
    request = BuildRequest(
        containerfile=f"FROM {base_images.image_tag('python')}\nRUN {flag} echo cached > /c/f\n",
        tag="localhost/orch-enginetest/cachemount:1",
        no_cache=True,
        owner=OWNER,
        timeout=600,
    )
    home = tmp_path / "home"
    try:
        with cache_dirs.Use(home, [cache_id]):
            engine.build(request, lambda line: None)
            assert (cache_dirs.root() / cache_id / "f").read_text() == "cached\n"
            assert cache_dirs.evict(home, instance, 0) == []  # in use by its build
        assert cache_dirs.evict(home, instance, 0) == [cache_id]
        assert not (cache_dirs.root() / cache_id).exists()
    finally:
        engine.remove_image(request.tag)
        shutil.rmtree(cache_dirs.root() / cache_id, ignore_errors=True)
