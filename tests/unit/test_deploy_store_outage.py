"""A deployment under way when the store stops answering (a PostgreSQL restart) ends once it
answers again, and a later deploy of the service is accepted (found by a tester: it stayed
`building`, claimed by the running server, and every later deploy was refused until a restart)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from orch.services.platform import Platform
from orch.store import refusals
from orch.store.schema import ServiceDeploymentRow, ServiceRow
from orch.workers import deploys
from tests.api.conftest import api, app  # noqa: F401 - the API's fixtures
from tests.api.test_services import answering, bundle, deploy, deployed  # noqa: F401 - answering: a fixture
from tests.refusing_store import no_pauses
from tests.refusing_store import refusal as refused


class Outage:
    """The store refuses the next `sessions` sessions once `_service` (the deployment's look at
    its service, where the tester's deployment crashed) is first refused."""

    def __init__(self, platform: Platform, monkeypatch: pytest.MonkeyPatch, sessions: int) -> None:
        self.refusing = 0
        self.sessions = sessions
        self.outages = 0  # how many deployments met it
        real_session, real_service = platform.store.session, deploys._service

        @contextmanager
        def session(*args: object, **kwargs: object) -> Iterator[Session]:
            if self.refusing > 0:
                self.refusing -= 1
                raise refused()
            with real_session(*args, **kwargs) as s:  # type: ignore[arg-type]
                yield s

        def service(s: Session, service_id: str) -> ServiceRow:
            if self.outages < self.times:
                self.outages += 1
                self.refusing = self.sessions
                raise refused()
            return real_service(s, service_id)

        self.times = 1
        monkeypatch.setattr(platform.store, "session", session)
        monkeypatch.setattr(deploys, "_service", service)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pauses(monkeypatch)


def work_as_the_queue(platform: Platform) -> None:
    """Each queued deployment, as the deploy queue's worker takes it: an exception out of it is
    logged (workers/queue.py) and the worker goes on."""
    for _pass in range(20):
        dep = deploys.claim(platform)
        if dep is None:
            return
        with suppress(Exception):
            deploys.execute(platform, dep)


def deployment(platform: Platform, version: int) -> ServiceDeploymentRow:
    with platform.store.session() as s:
        found = s.query(ServiceDeploymentRow).filter_by(version=version).one()
        s.expunge(found)
        return found


def deploys_again(client: httpx.Client, platform: Platform, tmp_path: Path, code: str) -> None:
    """A later deploy (v3) is accepted and serves."""
    resp = deploy(client, "pgsvc", bundle(tmp_path, {"main.py": code}, "pgsvc"))
    assert resp.status_code == 201, resp.text
    work_as_the_queue(platform)
    svc = client.get("/v1/services/pgsvc").json()
    assert svc["version"] == 3 and svc["state"] == "running", svc


def test_a_deployment_the_store_refused_under_way_is_deployed_once_it_answers(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert deployed(api, platform, tmp_path, "pgsvc")["version"] == 1
    resp = deploy(api, "pgsvc", bundle(tmp_path, {"main.py": "print('v2')\n"}, "pgsvc"))
    assert resp.status_code == 201, resp.text
    # Down for the deployment's look at its service and the two next asks of the store.
    outage = Outage(platform, monkeypatch, sessions=2)
    work_as_the_queue(platform)
    left, outage.refusing = outage.refusing, 0  # the store answers now, whatever was left of it
    dep = deployment(platform, 2)
    assert (dep.status, dep.error, dep.container) == ("ready", None, None)
    assert outage.outages == 1 and left == 0
    svc = api.get("/v1/services/pgsvc").json()
    assert svc["version"] == 2 and svc["state"] == "running" and not svc.get("error"), svc
    # One plain line for the refusal (no traceback), none saying it crashed.
    said = [r for r in caplog.records if r.name == "orch.workers.deploys"]
    assert any("the store refused it under way" in r.getMessage() for r in said), said
    assert not any(r.exc_info for r in said) and not any("crashed" in r.getMessage() for r in said)
    deploys_again(api, platform, tmp_path, "print('v3')\n")


def test_a_deployment_the_store_refuses_longer_is_queued_again_at_the_next_pass(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused past every pause, the deployment is held by the platform, and the deploy queue's
    next pass (once the store answers) queues it again."""
    deployed(api, platform, tmp_path, "pgsvc")
    assert deploy(api, "pgsvc", bundle(tmp_path, {"main.py": "print('v2')\n"}, "pgsvc")).status_code == 201
    outage = Outage(platform, monkeypatch, sessions=1000)
    dep = deploys.claim(platform)
    assert dep is not None
    with suppress(Exception):  # the queue's worker logs it and goes on
        deploys.execute(platform, dep)
    outage.refusing = 0  # the store answers again
    assert deployment(platform, 2).status == "building"  # held by the platform meanwhile
    work_as_the_queue(platform)
    assert deployment(platform, 2).status == "ready"
    assert api.get("/v1/services/pgsvc").json()["version"] == 2
    deploys_again(api, platform, tmp_path, "print('v3')\n")


def test_a_failure_the_store_refused_is_recorded_once_it_answers(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    answering: list[bool],  # noqa: F811
) -> None:
    """A deployment that fails (its container never answers) while the store refuses to record
    the failure: it is asked again, and the deployment ends failed with its sentence."""
    deployed(api, platform, tmp_path, "pgsvc")
    assert deploy(api, "pgsvc", bundle(tmp_path, {"main.py": "print('v2')\n"}, "pgsvc")).status_code == 201
    platform.config = platform.config.with_values(service_start_timeout=1)
    answering[0] = False
    real_fail, refusals = deploys._fail, [2]

    def fail(*args: object) -> None:
        if refusals[0] > 0:
            refusals[0] -= 1
            raise refused()
        real_fail(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(deploys, "_fail", fail)
    work_as_the_queue(platform)
    dep = deployment(platform, 2)
    assert dep.status == "failed" and dep.error and "did not answer on port" in dep.error, dep.error
    assert refusals[0] == 0
    svc = api.get("/v1/services/pgsvc").json()
    assert svc["version"] == 1 and "v2 was not deployed" in svc["error"], svc
    answering[0] = True
    deploys_again(api, platform, tmp_path, "print('v3')\n")


def test_a_store_that_refuses_every_time_fails_the_deployment_saying_so(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Queued again a bounded number of times, then failed with a sentence (not forever)."""
    deployed(api, platform, tmp_path, "pgsvc")
    assert deploy(api, "pgsvc", bundle(tmp_path, {"main.py": "print('v2')\n"}, "pgsvc")).status_code == 201
    outage = Outage(platform, monkeypatch, sessions=0)
    outage.times = 100
    work_as_the_queue(platform)
    dep = deployment(platform, 2)
    assert dep.status == "failed" and dep.error, dep.error
    assert dep.error.startswith("The store did not answer during the deployment"), dep.error
    assert outage.outages == 1 + refusals.REQUEUES
    outage.times = 0
    deploys_again(api, platform, tmp_path, "print('v3')\n")


def test_a_deployment_whose_bundle_meets_a_full_disk_fails_saying_so(
    api: httpx.Client,  # noqa: F811
    platform: Platform,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its bundle is extracted under ORCH_HOME: ENOSPC there failed it "internal error: OSError"
    with a traceback (found by a tester)."""
    deployed(api, platform, tmp_path, "pgsvc")
    assert deploy(api, "pgsvc", bundle(tmp_path, {"main.py": "print('v2')\n"}, "pgsvc")).status_code == 201

    def full(*_args: object, **_kwargs: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deploys, "extracted_bundle", full)
    work_as_the_queue(platform)
    dep = deployment(platform, 2)
    assert dep.status == "failed" and dep.error, dep.error
    assert dep.error.startswith("The store's disk is full"), dep.error
    said = [r for r in caplog.records if r.name == "orch.workers.deploys"]
    assert not any(r.exc_info for r in said), [r.getMessage() for r in said]
    svc = api.get("/v1/services/pgsvc").json()
    assert svc["version"] == 1 and svc["state"] == "running", svc  # the old version serves on
