"""A run (or a sandbox on demand) on a machine that lacks its environment's image pulls it by the
digest its build recorded (builder/registry.py), once; without a recorded digest a run fails with
a sentence."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from orch.builder import base_images
from orch.engine.fake import FakeEngine
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.services import environments as envs
from orch.services import sandboxes
from orch.services.platform import Platform
from tests.api.test_agents_runs import bundle, publish
from tests.conftest import close_platform, drain, drain_runs, make_platform

REGISTRY = "127.0.0.1:5000"
DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo tools\n"


@contextmanager
def another_machine(
    tmp_path: Path, database_url: str, reaching: FakeEngine, **settings: object
) -> Iterator[tuple[Platform, FakeEngine]]:
    """A second platform on the same store, with an engine of its own (its own images) that
    reaches the same registry as `reaching` does."""
    engine = FakeEngine()
    for r in base_images.RECIPES:
        engine.add_image(base_images.image_tag(r.name), base_images.labels(r.name))
    engine.registry = reaching.registry
    other = make_platform(tmp_path / "node", engine, database_url=database_url, **settings)
    try:
        yield other, engine
    finally:
        close_platform(other)


def pin(api: httpx.Client, platform: Platform, ws_id: str, tmp_path: Path) -> tuple[str, str | None]:
    """An agent `tooled` pinned to a custom environment built here: its image tag and digest."""
    envs.create(platform, ws_id, "tools", DOCKERFILE)
    drain(platform)
    files = {"main.py": "print('hi')\n", "orch.yaml": "environment: tools\n"}
    assert publish(api, "tooled", bundle(tmp_path, files)).status_code == 201
    shown = envs.show(platform, ws_id, "tools")
    assert shown.image is not None
    return shown.image, shown.image_digest


def test_a_machine_without_the_image_pulls_it_by_digest_once(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    settings = {"registry": REGISTRY, "registry_tls_verify": False}
    platform.config = platform.config.with_values(**settings)
    image, digest = pin(api, platform, workspace[0], tmp_path)
    assert digest is not None
    with another_machine(tmp_path, database_url, fake_engine, **settings) as (other, engine):
        assert engine.inspect_image(image) is None
        runs = [api.post("/v1/runs", json={"agent": "tooled"}).json()["id"] for _ in range(2)]
        assert drain_runs(other) == 2
        assert [api.get(f"/v1/runs/{r}").json()["status"] for r in runs] == ["succeeded"] * 2, [
            api.get(f"/v1/runs/{r}/logs").json() for r in runs
        ]
        assert engine.pulled == [(digest, image)]  # once: the second run found it there
        assert [c.image for c in engine.containers] == [image, image]
        assert f"Pulling {image} from the registry" in api.get(f"/v1/runs/{runs[0]}/logs").json()["log"]
        assert fake_engine.pulled == []  # the machine that built it had it


def test_without_a_recorded_digest_the_run_fails_with_a_sentence(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    image, digest = pin(api, platform, workspace[0], tmp_path)  # no registry: nothing pushed
    assert digest is None
    with another_machine(tmp_path, database_url, fake_engine) as (other, engine):
        run_id = api.post("/v1/runs", json={"agent": "tooled"}).json()["id"]
        assert drain_runs(other) == 1
        shown = api.get(f"/v1/runs/{run_id}").json()
        assert shown["status"] == "failed" and engine.containers == [] and engine.pulled == []
        assert (
            shown["reason"]
            == f"The image {image} is not on this machine, and no registry copy of it is recorded."
        )


def test_a_sandbox_on_a_machine_without_the_image_pulls_it_by_digest_once(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    """A cluster's node holds a sandbox of an environment another node built."""
    settings = {"registry": REGISTRY, "registry_tls_verify": False}
    platform.config = platform.config.with_values(**settings)
    image, digest = pin(api, platform, workspace[0], tmp_path)
    with another_machine(tmp_path, database_url, fake_engine, **settings) as (other, engine):
        holder = FakeHolder()
        other.held.holders.update({Isolation.RUNC: holder})
        for _ in range(2):
            assert sandboxes.create(other, workspace[0], environment="tools").status == "running"
        assert engine.pulled == [(digest, image)]  # once
        assert [spec.image for spec in holder.opened] == [image, image]


def test_an_image_gone_from_the_machine_that_built_it_is_pulled_again(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    fake_engine: FakeEngine,
    tmp_path: Path,
) -> None:
    """The tester's F8: this server built the image (so knew it present), then it was removed
    (`podman rmi`): the next run pulls it by digest rather than fail until a restart."""
    settings = {"registry": REGISTRY, "registry_tls_verify": False}
    platform.config = platform.config.with_values(**settings)
    image, digest = pin(api, platform, workspace[0], tmp_path)
    first = api.post("/v1/runs", json={"agent": "tooled"}).json()["id"]
    assert drain_runs(platform) == 1 and api.get(f"/v1/runs/{first}").json()["status"] == "succeeded"
    assert fake_engine.pulled == []  # it had it
    fake_engine.remove_image(image)
    again = api.post("/v1/runs", json={"agent": "tooled"}).json()["id"]
    assert drain_runs(platform) == 1
    assert api.get(f"/v1/runs/{again}").json()["status"] == "succeeded"
    assert fake_engine.pulled == [(digest, image)]
    assert f"Pulling {image} from the registry" in api.get(f"/v1/runs/{again}/logs").json()["log"]


def test_a_sandbox_of_an_image_gone_from_the_machine_that_built_it_pulls_it_again(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    fake_engine: FakeEngine,
    tmp_path: Path,
) -> None:
    """As a run does: a sandbox on demand whose image was removed since (`podman rmi`) pulls it
    by digest rather than fail until a restart."""
    settings = {"registry": REGISTRY, "registry_tls_verify": False}
    platform.config = platform.config.with_values(**settings)
    image, digest = pin(api, platform, workspace[0], tmp_path)
    holder = FakeHolder()
    platform.held.holders.update({Isolation.RUNC: holder})
    assert sandboxes.create(platform, workspace[0], environment="tools").status == "running"
    assert fake_engine.pulled == []  # it had it
    fake_engine.remove_image(image)
    assert sandboxes.create(platform, workspace[0], environment="tools").status == "running"
    assert fake_engine.pulled == [(digest, image)]
    assert [spec.image for spec in holder.opened] == [image, image]
