"""Replicas on the fake engine: N supervised containers, spread over by the proxy, replaced one
at a time by a redeploy (rolled back when a new one does not answer), each restarted on its own."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services import reconcile, routing
from orch.services.platform import Platform
from tests.api.test_services import _skip_backoff, bundle, deploy, work
from tests.api.test_services import cli as cli  # a fixture


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


def deployed(api: httpx.Client, platform: Platform, tmp_path: Path, replicas: int, code: str = "") -> dict:
    files = {"main.py": code, "orch.yaml": f"replicas: {replicas}\n"}
    resp = deploy(api, "web", bundle(tmp_path, files, f"r{replicas}{len(code)}"))
    assert resp.status_code == 201, resp.text
    work(platform)
    return api.get("/v1/services/web").json()


def versions(fake_engine: FakeEngine) -> list[str]:
    return sorted(spec.labels["org.orch.version"] for spec, _ in fake_engine.detached.values())


def test_replicas_run_and_the_proxy_spreads_over_them(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(api, platform, tmp_path, 3)
    assert svc["state"] == "running" and svc["desired_replicas"] == 3
    assert [(r["slot"], r["state"], r["version"]) for r in svc["replicas"]] == [
        (0, "running", 1),
        (1, "running", 1),
        (2, "running", 1),
    ]
    assert len(fake_engine.detached) == 3 and svc["container"] == svc["replicas"][0]["container"]
    route = routing.of(platform).lookup("team", "web")
    assert route is not None and len(route.backends) == 3
    firsts = [routing.of(platform).pick(route)[0].container for _ in range(6)]
    assert firsts[:3] != firsts[1:4] and sorted(set(firsts)) == sorted(b.container for b in route.backends)


def test_a_redeploy_replaces_them_one_at_a_time(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed(api, platform, tmp_path, 3)
    most = [0]
    start, remove = fake_engine.start_container, fake_engine.remove_container

    def started(*args: object) -> str:
        name = start(*args)  # type: ignore[arg-type]
        most[0] = max(most[0], len(fake_engine.detached))
        return name

    events: list[str] = []
    monkeypatch.setattr(fake_engine, "start_container", lambda *a: (events.append("start"), started(*a))[1])
    monkeypatch.setattr(
        fake_engine, "remove_container", lambda name, timeout=10: (events.append("stop"), remove(name))
    )
    svc = deployed(api, platform, tmp_path, 3, "# v2\n")
    assert svc["version"] == 2 and versions(fake_engine) == ["2", "2", "2"]
    assert events == ["start", "stop"] * 3 and most[0] == 4  # never more than one container extra
    # Fewer replicas: the extra ones go; more: they come.
    assert versions(fake_engine) == ["2", "2", "2"]
    svc = deployed(api, platform, tmp_path, 1, "# v3\n")
    assert [r["slot"] for r in svc["replicas"]] == [0] and versions(fake_engine) == ["3"]
    svc = deployed(api, platform, tmp_path, 2, "# v4\n")
    assert [r["slot"] for r in svc["replicas"]] == [0, 1] and versions(fake_engine) == ["4", "4"]


def test_a_replica_that_does_not_answer_rolls_the_others_back(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    deployed(api, platform, tmp_path, 3)

    def probe(address: str, port: int) -> bool:
        # The second container of v2 never answers; every other one does.
        v2 = [s for s in fake_engine.started if s.labels["org.orch.version"] == "2"]
        latest = fake_engine.started[-1]
        return not (latest.labels["org.orch.version"] == "2" and len(v2) == 2)

    platform.probe = probe
    platform.config = platform.config.with_values(service_start_timeout=1)
    assert (
        deploy(
            api, "web", bundle(tmp_path, {"main.py": "# v2\n", "orch.yaml": "replicas: 3\n"}, "b")
        ).status_code
        == 201
    )
    work(platform)
    failed = api.get("/v1/services/web/deployments/2").json()
    assert failed["status"] == "failed" and "did not answer" in failed["error"]
    svc = api.get("/v1/services/web").json()
    assert svc["version"] == 1 and svc["state"] == "running" and "v2 was not deployed" in svc["error"]
    assert versions(fake_engine) == ["1", "1", "1"]  # the replaced one has v1 again
    assert [r["version"] for r in svc["replicas"]] == [1, 1, 1]


def test_each_replica_is_restarted_on_its_own(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(api, platform, tmp_path, 2)
    first, second = (r["container"] for r in svc["replicas"])
    fake_engine.exit_container(second, 1)
    reconcile.reconcile(platform)
    svc = api.get("/v1/services/web").json()
    assert svc["state"] == "restarting" and svc["restarts"] == 1
    assert [(r["state"], r["container"]) for r in svc["replicas"]] == [
        ("running", first),
        ("restarting", None),
    ]
    route = routing.of(platform).lookup("team", "web")
    assert route is not None and [b.container for b in route.backends] == [first]  # only what runs
    _skip_backoff(platform)
    reconcile.reconcile(platform)
    svc = api.get("/v1/services/web").json()
    assert svc["state"] == "running" and svc["replicas"][0]["container"] == first
    assert svc["replicas"][1]["container"] not in (None, second)


def test_a_started_replica_is_sent_requests_once_it_answers(
    api: httpx.Client, site: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(api, platform, tmp_path, 1)
    fake_engine.exit_container(svc["container"], 1)
    reconcile.reconcile(platform)
    _skip_backoff(platform)
    platform.probe = lambda address, port: False  # started, not listening yet
    assert reconcile.reconcile(platform) == reconcile.PROBE_AGAIN
    assert api.get("/v1/services/web").json()["replicas"][0]["state"] == "starting"
    assert site.get("/services/team/web/").status_code == 503
    platform.probe = lambda address, port: True
    reconcile.reconcile(platform)
    assert api.get("/v1/services/web").json()["state"] == "running"


def test_a_bad_number_of_replicas_is_refused(api: httpx.Client, tmp_path: Path) -> None:
    resp = deploy(api, "web", bundle(tmp_path, {"main.py": "", "orch.yaml": "replicas: 0\n"}))
    assert resp.status_code == 400
    assert "replicas: 0 is not a number of replicas from 1 to 20." in resp.json()["message"]


def test_the_cli_and_the_pages_show_the_replicas(
    api: httpx.Client, platform: Platform, tmp_path: Path, workspace: tuple[str, str], cli
) -> None:
    deployed(api, platform, tmp_path, 2)
    listed = cli("service", "list").output
    assert "REPLICAS" in listed and "2/2" in listed
    shown = cli("service", "status", "web").output
    assert "replicas  2/2" in shown and "1  running" in shown
    cookie = {"Cookie": f"orch_token={workspace[1]}"}
    assert "2 of 2 running" in api.get("/ui/services/web", headers=cookie).text
    assert "<td>2/2</td>" in api.get("/ui/services", headers=cookie).text
