"""Services' images through the registry, on the fake engine: a deployment pushes the image it
built and records its digest; a machine that lacks the image of a replica it starts (it took the
service over, or deploys it) pulls it by that digest first; without a registry it says why it
can't start it; a failed push fails the deployment and the old version serves on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from orch.builder import registry
from orch.engine.fake import FakeEngine
from orch.services import images, leases, reconcile
from orch.services.platform import Platform
from orch.store.schema import ServiceDeploymentRow, ServiceLeaseRow, utcnow
from orch.workers import deploys
from tests.api.test_registry_runs import REGISTRY, another_machine
from tests.api.test_service_replicas import deployed
from tests.api.test_services import bundle, deploy, work
from tests.conftest import drain

SETTINGS = {"registry": REGISTRY, "registry_tls_verify": False}


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


def machine_b(
    platform: Platform, fake_engine: FakeEngine, database_url: str, tmp_path: Path, **settings: object
) -> Iterator[tuple[Platform, FakeEngine]]:
    with another_machine(tmp_path, database_url, fake_engine, **settings) as (other, engine):
        other.probe = lambda address, port: True
        yield other, engine


@pytest.fixture
def with_registry(platform: Platform) -> None:
    platform.config = platform.config.with_values(**SETTINGS)


def digests(platform: Platform) -> dict[int, str | None]:
    with platform.store.session() as s:
        rows = s.execute(select(ServiceDeploymentRow.version, ServiceDeploymentRow.image_digest)).all()
        return {version: digest for version, digest in rows}


def take_over(platform: Platform, other: Platform) -> None:
    """`platform` stopped renewing its leases; `other` takes them at its next pass."""
    with platform.store.session() as s:
        s.execute(update(ServiceLeaseRow).values(expires_at=utcnow() - timedelta(seconds=1)))
    reconcile.reconcile(other)


@pytest.mark.usefixtures("with_registry")
def test_a_deployment_pushes_its_image_and_records_the_digest(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    deployed(api, platform, tmp_path, 1)
    tag = images.service_tag(platform, api.get("/v1/services/web").json()["id"], "web", 1)
    remote = registry.remote_name(REGISTRY, tag)
    assert remote == f"{REGISTRY}/orch-svc/{platform.instance}:web-" + tag.rpartition(":web-")[2]
    assert fake_engine.pushed == [(tag, remote, False)]
    (digest,) = fake_engine.registry
    assert digest.startswith(f"{REGISTRY}/orch-svc/{platform.instance}@sha256:")
    assert digests(platform) == {1: digest}
    log = api.get("/v1/services/web/deployments/1").json()["log_tail"]
    assert f"Pushing {remote}" in log and f"Pushed {digest}" in log


def test_a_machine_that_takes_a_service_over_pulls_its_image_by_digest(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
    with_registry: None,
) -> None:
    deployed(api, platform, tmp_path, 2)
    tag = images.service_tag(platform, api.get("/v1/services/web").json()["id"], "web", 1)
    for other, engine in machine_b(platform, fake_engine, database_url, tmp_path, **SETTINGS):
        assert engine.inspect_image(tag) is None
        take_over(platform, other)
        assert engine.pulled == [(digests(platform)[1], tag)]  # once, for both replicas
        assert [spec.image for spec in engine.started] == [tag, tag] and len(engine.detached) == 2
        assert api.get("/v1/services/web").json()["state"] == "running"
        assert fake_engine.pulled == []


def test_without_a_registry_the_taker_says_why_it_cannot_start_it(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, database_url: str, tmp_path: Path
) -> None:
    deployed(api, platform, tmp_path, 1)
    assert digests(platform) == {1: None} and fake_engine.pushed == []
    tag = images.service_tag(platform, api.get("/v1/services/web").json()["id"], "web", 1)
    for other, engine in machine_b(platform, fake_engine, database_url, tmp_path):
        take_over(platform, other)
        svc = api.get("/v1/services/web").json()
        assert engine.started == [] and engine.pulled == []
        assert svc["state"] == "restarting" and svc["replicas"][0]["container"] is None
        assert (
            svc["error"] == f"The image {tag} is not on this machine, and no registry copy of it is recorded."
        )


@pytest.mark.usefixtures("with_registry")
def test_a_failed_push_fails_the_deployment_and_the_old_version_serves_on(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    v1 = deployed(api, platform, tmp_path, 1)
    fake_engine.registry_error = "connection refused"
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "# v2\n"}, "v2")).status_code == 201
    work(platform)
    failed = api.get("/v1/services/web/deployments/2").json()
    assert failed["status"] == "failed"
    assert failed["error"].startswith(
        "The image of the new version was built but not pushed to the registry, so other machines "
        "cannot run it: podman push of"
    )
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["container"], svc["state"]) == (1, v1["container"], "running")
    assert list(fake_engine.detached) == [v1["container"]]


def test_a_deploy_on_another_machine_pulls_the_dockerfiles_environment_image(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
    with_registry: None,
) -> None:
    """The environment built from the bundle's Dockerfile was built (and pushed) by A; B's deploy
    worker builds the service's image on it, so it pulls it by its digest first."""
    files = {"main.py": "", "Dockerfile": "FROM e2bdev/code-interpreter:latest\nRUN echo built\n"}
    assert deploy(api, "web", bundle(tmp_path, files)).status_code == 201
    drain(platform)  # A's build worker builds the environment and pushes it
    env = api.get("/v1/environments/web-dockerfile").json()
    assert env["image_digest"]
    for other, engine in machine_b(platform, fake_engine, database_url, tmp_path, **SETTINGS):
        dep = deploys.claim(other)
        assert dep is not None
        deploys.execute(other, dep)
        shown = api.get("/v1/services/web/deployments/1").json()
        assert shown["status"] == "ready", shown
        assert engine.pulled == [(env["image_digest"], env["image"])]
        assert engine.builds[-1].containerfile.startswith(f"FROM {env['image']}\n")
        assert f"Pulling {env['image']} from the registry" in shown["log_tail"]
        assert digests(platform)[1] in engine.registry  # B pushed the service's image
        assert leases.holder(platform, api.get("/v1/services/web").json()["id"]) == other.instance
