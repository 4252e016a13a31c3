"""A cache hit whose source environment is deleted: the environment that reused the image still
shows its tag whole, and its cache reason says the source was deleted since (docs/environments.md,
"Build cache"; found by a tester: the tag was shown cut to a name no image has)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from orch.store.schema import BuildRow
from tests.api.conftest import client_of
from tests.api.test_environments import GOOD, create
from tests.conftest import build_log, drain


@pytest.fixture
def other(app: FastAPI, platform: Platform) -> Iterator[httpx.Client]:
    """A client of a second workspace."""
    from orch.services import workspaces

    with platform.store.session() as s:
        _ws, token = workspaces.create_workspace(s, "other")
    with client_of(app, token) as c:
        yield c


def test_a_hit_in_the_workspace_keeps_the_whole_tag_once_its_source_is_deleted(
    api: httpx.Client, other: httpx.Client, platform: Platform, fake_engine: FakeEngine
) -> None:
    source = create(api, "src")
    drain(platform)
    source = api.get("/v1/environments/src").json()
    tag = source["image"]
    assert tag.endswith(f"-{source['build_id']}")
    copy = create(api, "copy")
    assert copy["cache"] == "hit" and copy["image"] == tag
    assert copy["cache_reason"] == f"same Dockerfile as src, {source['id']}"
    theirs = create(other, "theirs", GOOD)
    assert theirs["cache"] == "hit" and theirs["image"] == tag.rsplit("-", 1)[0]

    assert api.delete("/v1/environments/src").status_code == 200
    after = api.get("/v1/environments/copy").json()
    # The tag the engine has, whole, for the environment and its build alike.
    assert after["image"] == tag and after["build"]["image"] == tag
    assert fake_engine.inspect_image(tag) is not None
    assert after["cache_reason"] == f"same Dockerfile as src, {source['id']} (since deleted)"
    # The other workspace still sees nothing of this one's build.
    assert other.get("/v1/environments/theirs").json()["image"] == tag.rsplit("-", 1)[0]
    # The build that made the image is kept, as the copy's, its log with it.
    log = api.get("/v1/environments/copy/logs", params={"build": source["build_id"]})
    assert log.status_code == 200 and log.json()["text"] == build_log(platform, source["build_id"]) != ""
    # A later hit in the workspace names a source that is there.
    later = create(api, "later")
    assert later["image"] == tag and later["cache_reason"] == f"same Dockerfile as copy, {after['id']}"

    # Once no environment of the workspace runs it, the build goes, and the image once nothing names it.
    api.delete("/v1/environments/copy")
    api.delete("/v1/environments/later")
    with platform.store.session() as s:
        assert s.get(BuildRow, source["build_id"]) is None
    assert fake_engine.inspect_image(tag) is not None  # the other workspace's still runs it
    assert other.get("/v1/environments/theirs").json()["image"] == tag.rsplit("-", 1)[0]
    other.delete("/v1/environments/theirs")
    assert fake_engine.inspect_image(tag) is None


def test_a_workspace_delete_leaves_no_build_of_its_environments(
    api: httpx.Client, other: httpx.Client, platform: Platform, fake_engine: FakeEngine
) -> None:
    # Deleted one after the other, the source first: its build passes to the copy, and goes with it.
    source = create(other, "src")
    drain(platform)
    copy = create(other, "copy")
    made = other.get("/v1/environments/src").json()
    assert copy["cache"] == "hit" and copy["image"] == made["image"]
    assert api.delete("/v1/workspaces/other").status_code == 200
    with platform.store.session() as s:
        assert s.get(BuildRow, made["build_id"]) is None and s.get(BuildRow, copy["build_id"]) is None
    assert fake_engine.inspect_image(made["image"]) is None
    assert source["id"] != copy["id"]
