"""The images a kill can leave that no record names go at start; named ones stay."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.errors import EngineError
from orch.services import images
from orch.services.platform import Platform
from orch.workers import builds
from tests.api.test_environments import create
from tests.api.test_services import answering, bundle, deploy, deployed  # noqa: F401 - autouse fixture
from tests.conftest import drain


def test_images_no_record_names_go_and_named_ones_stay(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    create(api, "one")
    drain(platform)
    env_image = api.get("/v1/environments/one").json()["image"]
    svc = deployed(api, platform, tmp_path, "web")
    assert svc["version"] == 1
    # A new version queued (a kill came after its image was made): its tag is in flight.
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "print(2)\n"}, "web2")).status_code == 201
    ours = platform.labels
    in_flight = fake_engine.add_image(images.service_tag(platform, svc["id"], "web", 2), ours).tags[0]
    # What kills leave: the image of a build that then failed, a replaced version's image.
    failed_build = fake_engine.add_image(images.environment_tag(platform, "f" * 64, "bld_failed"), ours).tags[
        0
    ]
    old_version = fake_engine.add_image(images.service_tag(platform, svc["id"], "web", 0), ours).tags[0]
    # Another platform's image, named by nothing here.
    other = {"org.orch.instance": "someone"}
    theirs = fake_engine.add_image("localhost/orch-env/someone:else", other).tags[0]

    removed = images.remove_unnamed(platform)

    assert sorted(removed) == sorted([failed_build, old_version])
    for tag in (env_image, svc["image"], in_flight, theirs):
        assert fake_engine.inspect_image(tag) is not None, tag
    assert f"untagged images of {platform.instance}" in fake_engine.swept
    assert images.remove_unnamed(platform) == []  # nothing left to remove


def test_a_failing_engine_does_not_stop_a_start(
    platform: Platform, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*args: object) -> None:
        raise EngineError("podman images failed: storage is locked", "")

    monkeypatch.setattr(fake_engine, "images", fails)
    monkeypatch.setattr(fake_engine, "remove_untagged_images", fails)
    assert images.remove_unnamed(platform) == []
    assert builds.recover(platform) == []  # what runs at start, before the build workers
