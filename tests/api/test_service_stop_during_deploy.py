"""`orch service stop` during a deploy sticks: the deployment ends with its version current and
the service stopped (its switch set the service running again, undoing the stop). `restart`
during a deploy undoes such a stop: the deployment ends with the service running."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from orch.workers import deploys
from tests.api.test_services import answering as answering  # autouse: new containers answer
from tests.api.test_services import bundle, deploy, deployed, work
from tests.api.test_services import cli as cli  # a fixture


def during_the_wait(platform: Platform, *calls: str):
    """A probe that, the first time it is asked (the new container is up, not answering yet),
    makes these API calls (the deploy worker waits meanwhile), then answers."""
    pending = list(calls)

    def probe(address: str, port: int) -> bool:
        while pending:
            pending.pop(0)()
        return True

    return probe


def test_a_stop_while_the_new_version_comes_up_sticks(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    deployed(api, platform, tmp_path)
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "# v2\n"}, "v2")).status_code == 201
    answers: list[httpx.Response] = []
    platform.probe = during_the_wait(platform, lambda: answers.append(api.post("/v1/services/web/stop")))
    work(platform)
    assert answers[0].status_code == 200 and answers[0].json()["desired"] == "stopped"
    assert api.get("/v1/services/web/deployments/2").json()["status"] == "ready"
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["state"], svc["desired"]) == (2, "stopped", "stopped")
    assert fake_engine.detached == {} and svc["replicas"] == []
    # It starts with the new version when asked.
    restarted = api.post("/v1/services/web/restart").json()
    assert (restarted["state"], restarted["version"]) == ("running", 2)
    assert [spec.labels["org.orch.version"] for spec, _ in fake_engine.detached.values()] == ["2"]


def test_a_stop_before_the_first_version_is_built_sticks_and_starts_nothing(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert deploy(api, "web", bundle(tmp_path, {"main.py": ""})).status_code == 201
    build = fake_engine.build

    def stopped_while_building(*args: object, **kwargs: object) -> object:
        assert api.post("/v1/services/web/stop").status_code == 200
        return build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fake_engine, "build", stopped_while_building)
    work(platform)
    dep = api.get("/v1/services/web/deployments/1").json()
    assert dep["status"] == "ready" and "was stopped during the deployment" in dep["log_tail"]
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["state"], svc["desired"]) == (1, "stopped", "stopped")
    assert fake_engine.started == []  # no container was started for nothing
    assert api.post("/v1/services/web/restart").json()["state"] == "running"


def test_a_server_stop_stops_the_versions_build_and_queues_the_deployment_again(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    assert deploy(api, "web", bundle(tmp_path, {"main.py": ""})).status_code == 201
    fake_engine.gate.clear()  # the build is held at its first step
    stopping = threading.Event()
    dep_id = deploys.claim(platform)
    assert dep_id is not None
    worker = threading.Thread(target=deploys.execute, args=(platform, dep_id, stopping))
    worker.start()
    try:
        for _ in range(500):  # until the build runs (bounded: 10 s)
            if fake_engine.builds:
                break
            threading.Event().wait(0.02)
        assert api.get("/v1/services/web/deployments/1").json()["status"] == "building"
        stopping.set()  # the server stops
        worker.join(10)  # the build (held up to 30 s at its step) ends within its next look
        assert not worker.is_alive()
    finally:
        fake_engine.gate.set()
        worker.join(40)
    assert fake_engine.stopped == [fake_engine.builds[0].tag]
    dep = api.get("/v1/services/web/deployments/1").json()
    assert (dep["status"], dep["error"]) == ("queued", None)  # not failed: the next start goes on
    work(platform)
    assert api.get("/v1/services/web/deployments/1").json()["status"] == "ready"
    assert api.get("/v1/services/web").json()["state"] == "running"


def test_a_restart_during_the_deploy_undoes_a_stop(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    # The first version: restart (before, "has no deployed version") starts it once deployed.
    assert deploy(api, "web", bundle(tmp_path, {"main.py": ""})).status_code == 201
    assert api.post("/v1/services/web/stop").status_code == 200
    restarted = api.post("/v1/services/web/restart")
    assert restarted.status_code == 200 and restarted.json()["state"] == "deploying"
    work(platform)
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["state"], svc["desired"]) == (1, "running", "running")
    # A redeploy: stopped, then restarted while the new version comes up.
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "# v2\n"}, "v2")).status_code == 201
    platform.probe = during_the_wait(
        platform,
        lambda: api.post("/v1/services/web/stop"),
        lambda: api.post("/v1/services/web/restart"),
    )
    work(platform)
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["state"], svc["desired"]) == (2, "running", "running")
    assert [spec.labels["org.orch.version"] for spec, _ in fake_engine.detached.values()] == ["2"]


def test_a_stop_sticks_when_the_deploy_then_fails_and_rolls_back(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """Two replicas: the first switches to v2 (the service serves v2), then the service is
    stopped, then the second never answers: v1 is current again, and the service stays stopped."""
    files = {"main.py": "", "orch.yaml": "replicas: 2\n"}
    deployed(api, platform, tmp_path, **files)
    platform.config = platform.config.with_values(service_start_timeout=1)
    v2 = [0]

    def probe(address: str, port: int) -> bool:
        if fake_engine.started[-1].labels["org.orch.version"] != "2":
            return True
        v2[0] += 1
        if v2[0] == 2:  # the second replica of v2 is up: stopped meanwhile; it never answers
            assert api.post("/v1/services/web/stop").status_code == 200
        return v2[0] == 1

    platform.probe = probe
    assert deploy(api, "web", bundle(tmp_path, {**files, "main.py": "# v2\n"}, "v2")).status_code == 201
    work(platform)
    assert api.get("/v1/services/web/deployments/2").json()["status"] == "failed"
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["state"], svc["desired"]) == (1, "stopped", "stopped")
    assert fake_engine.detached == {}


def test_cli_says_a_stop_during_a_deploy_sticks(
    cli, api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path, monkeypatch
) -> None:
    import orch.cli.service as service_cli

    deployed(api, platform, tmp_path, name="api")
    assert deploy(api, "api", bundle(tmp_path, {"main.py": "# v2\n"}, "v2")).status_code == 201
    res = cli("service", "stop", "api")
    assert res.exit_code == 0, res.output
    assert "api stopped. Its deployment of v2 goes on and leaves it stopped" in res.output
    assert "orch service restart api" in res.output
    # The deploy's own CLI, waiting for it, says it ends stopped.
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("# v3\n")
    work(platform)

    def stopped_while_it_waits(_seconds: float) -> None:
        api.post("/v1/services/api/stop")
        work(platform)

    monkeypatch.setattr(service_cli.time, "sleep", stopped_while_it_waits)
    res = cli("service", "deploy", str(tmp_path / "app"), "--name", "api")
    assert res.exit_code == 0, res.output
    assert "api v3 is deployed, and stopped: it was stopped during the deployment" in res.output
    assert "is running" not in res.output


def test_a_restart_during_a_rollout_keeps_the_serving_version_up(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """Before, a restart while the new version came up removed the serving version's containers,
    and the service answered nothing until the rollout ended. Now each comes back fresh at once."""
    deployed(api, platform, tmp_path)
    [first] = fake_engine.detached
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "# v2\n"}, "v2")).status_code == 201
    during: list[dict[str, str]] = []

    def restart() -> None:
        assert api.post("/v1/services/web/restart").status_code == 200
        during.append(
            {name: spec.labels["org.orch.version"] for name, (spec, _) in fake_engine.detached.items()}
        )
        svc = api.get("/v1/services/web").json()
        during.append({r["container"]: r["state"] for r in svc["replicas"]})

    platform.probe = during_the_wait(platform, restart)
    work(platform)
    versions, replicas = during
    # While v2 came up: a fresh v1 container (not the first), serving, besides v2's.
    [fresh] = [name for name, version in versions.items() if version == "1"]
    assert fresh != first and replicas == {fresh: "running"}
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["state"]) == (2, "running")
    assert [spec.labels["org.orch.version"] for spec, _ in fake_engine.detached.values()] == ["2"]
