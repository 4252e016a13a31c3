"""What environments of one Dockerfile share across workspaces, and what they never share: a cache
mount's content, and the image another workspace's environment runs (docs/environments.md,
"Build cache")."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from orch.dockerfile import cache_owner
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from tests.api.conftest import client_of
from tests.api.test_environments import GOOD, create
from tests.conftest import drain

CACHED = (
    "FROM e2bdev/code-interpreter:latest\nRUN --mount=type=cache,target=/root/.cache/pip pip install six\n"
)


@pytest.fixture
def other_workspace(platform: Platform) -> tuple[str, str]:
    """(id, plain token) of a second workspace."""
    from orch.services import workspaces

    with platform.store.session() as s:
        ws, token = workspaces.create_workspace(s, "other")
        return ws.id, token


@pytest.fixture
def other(app: FastAPI, other_workspace: tuple[str, str]) -> Iterator[httpx.Client]:
    """A client of the second workspace."""
    with client_of(app, other_workspace[1]) as c:
        yield c


def test_a_cache_mount_is_the_workspaces_own(
    api: httpx.Client,
    other: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    workspace: tuple[str, str],
    other_workspace: tuple[str, str],
) -> None:
    create(api, "mine", CACHED)
    drain(platform)
    theirs = create(other, "theirs", CACHED)
    # No hit on the first workspace's image: what its cache held may be in it.
    assert theirs["status"] == "queued" and theirs["cache_reason"] == "new Dockerfile"
    assert drain(platform) == 1
    first, second = fake_engine.builds[-2:]
    for request, ws in ((first, workspace[0]), (second, other_workspace[0])):
        owner = cache_owner(platform.instance, ws)
        assert f",id=orch-{owner}-" in request.containerfile
    assert first.containerfile != second.containerfile
    mine = api.get("/v1/environments/mine").json()
    assert mine["image"] != other.get("/v1/environments/theirs").json()["image"]
    # Within a workspace, the same Dockerfile is still a hit.
    again = create(api, "again", CACHED)
    assert again["cache"] == "hit" and again["image"] == mine["image"]


def test_a_rebuild_moves_only_its_own_environment(
    api: httpx.Client, other: httpx.Client, platform: Platform, fake_engine: FakeEngine
) -> None:
    victim = create(api, "victim")
    drain(platform)
    victim = api.get("/v1/environments/victim").json()
    copy = create(other, "copy", GOOD)
    assert copy["cache"] == "hit" and copy["cache_reason"] == "same Dockerfile as an earlier build"
    # The same image, shown without the other workspace's build id (docs/environments.md).
    assert victim["image"] == f"{copy['image']}-{victim['build_id']}" and "bld_" not in copy["image"]

    rebuilt = other.post("/v1/environments/copy/build", json={"no_cache": True}).json()
    assert rebuilt["status"] == "queued"
    assert drain(platform) == 1
    copy = other.get("/v1/environments/copy").json()
    after = api.get("/v1/environments/victim").json()
    # The victim runs the image it ran, which is still there; its status names its own build.
    assert after["image"] == victim["image"] and after["build_id"] == victim["build_id"]
    assert fake_engine.inspect_image(victim["image"]) is not None
    assert copy["image"] != victim["image"] and copy["build_id"] == rebuilt["build_id"]
    assert fake_engine.builds[-1].tag == copy["image"]

    # Rebuilt again, the copy's previous image goes: nothing names it any more.
    previous = copy["image"]
    other.post("/v1/environments/copy/build", json={"no_cache": True})
    drain(platform)
    assert fake_engine.inspect_image(previous) is None
    # The victim rebuilt, its first image goes too once the copy no longer names it.
    api.post("/v1/environments/victim/build", json={"no_cache": True})
    drain(platform)
    assert fake_engine.inspect_image(victim["image"]) is None
    assert fake_engine.inspect_image(api.get("/v1/environments/victim").json()["image"]) is not None


def test_a_hit_on_another_build_lets_the_old_image_go(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine
) -> None:
    create(api, "a")
    drain(platform)
    old = api.get("/v1/environments/a").json()["image"]
    create(api, "b", GOOD, no_cache=True)
    drain(platform)
    new = api.get("/v1/environments/b").json()["image"]
    # `a` built again takes the newest image of its Dockerfile, b's: its own is named by none.
    data = api.post("/v1/environments/a/build", json={}).json()
    assert data["cache"] == "hit" and data["image"] == new
    assert fake_engine.inspect_image(old) is None
