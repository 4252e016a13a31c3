"""Services' budgets (services/service_budget.py): replicas times memory and process limits,
summed over the services that run or are being deployed, within `service_memory`,
`service_pids` and a workspace's `max_service_memory`; a deploy or a restart beyond them is
refused with 429 and changes nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from orch.services import workspaces
from orch.services.platform import Platform
from orch.store.schema import ServiceDeploymentRow, ServiceRow
from tests.api.test_services import bundle, deploy, work
from tests.api.test_services import cli as cli  # a fixture

MiB = 2**20


def _deploy(
    api: httpx.Client, tmp_path: Path, name: str, yaml: str, token: str | None = None
) -> httpx.Response:
    data = bundle(tmp_path, {"main.py": "", "orch.yaml": yaml}, f"{name}-{abs(hash(yaml))}")
    if token is None:
        return deploy(api, name, data)
    return api.post(
        f"/v1/services/{name}/deploy",
        content=data,
        headers={"Content-Type": "application/gzip", "Authorization": f"Bearer {token}"},
    )


def _refused(resp: httpx.Response) -> tuple[str, str]:
    assert resp.status_code == 429, resp.text
    body = resp.json()
    assert body["error"] == "limit_reached", body
    return str(body["message"]), str(body["fix"])


def _stored(platform: Platform) -> tuple[int, int]:
    with platform.store.session() as s:
        services = s.scalar(select(func.count()).select_from(ServiceRow)) or 0
        return services, s.scalar(select(func.count()).select_from(ServiceDeploymentRow)) or 0


@pytest.fixture
def budgets(platform: Platform) -> Platform:
    platform.probe = lambda address, port: True  # a new container "answers" (the fake engine runs nothing)
    platform.config = platform.config.with_values(
        service_memory=2048 * MiB, max_service_memory=1536 * MiB, service_pids=1000
    )
    return platform


def _other(platform: Platform) -> str:
    with platform.store.session() as s:
        return workspaces.create_workspace(s, "other")[1]


def test_a_deploy_past_the_servers_memory_is_refused_and_changes_nothing(
    api: httpx.Client, budgets: Platform, tmp_path: Path
) -> None:
    assert _deploy(api, tmp_path, "a", "replicas: 2\nresources:\n  memory: 512Mi\n").status_code == 201
    work(budgets)
    before = _stored(budgets)
    other = _other(budgets)  # within its own share, past the server's
    message, fix = _refused(_deploy(api, tmp_path, "b", "replicas: 3\nresources:\n  memory: 512Mi\n", other))
    assert message == (
        "The services on this server hold 1 GiB of the 2 GiB of memory they may have at once "
        "(service_memory), and b asks for 1.5 GiB (3 replicas × memory: 512 MiB)."
    )
    assert "ORCH_SERVICE_MEMORY" in fix and "orch service stop" in fix
    assert _stored(budgets) == before
    # What fits goes in; a redeploy of a service counts its new version instead of its old one.
    assert _deploy(api, tmp_path, "b", "resources:\n  memory: 1Gi\n", other).status_code == 201
    work(budgets)
    assert _deploy(api, tmp_path, "a", "replicas: 1\nresources:\n  memory: 1Gi\n").status_code == 201
    work(budgets)


def test_a_workspace_holds_at_most_its_share(api: httpx.Client, budgets: Platform, tmp_path: Path) -> None:
    assert _deploy(api, tmp_path, "a", "resources:\n  memory: 1Gi\n").status_code == 201
    message, _ = _refused(_deploy(api, tmp_path, "b", "resources:\n  memory: 768Mi\n"))
    assert message == (
        "This workspace's services hold 1 GiB of memory, and b asks for 768 MiB (1 replica × memory: "
        "768 MiB): more than the 1.5 GiB a workspace's services may hold at once (max_service_memory)."
    )
    # A deployment under way holds what its version asks for already; another workspace has a
    # share of its own.
    assert _deploy(api, tmp_path, "b", "resources:\n  memory: 768Mi\n", _other(budgets)).status_code == 201


def test_processes_are_counted_as_replicas_times_pids(
    api: httpx.Client, budgets: Platform, tmp_path: Path
) -> None:
    yaml = "replicas: 2\nresources:\n  memory: 64Mi\n  pids: 400\n"
    assert _deploy(api, tmp_path, "a", yaml).status_code == 201
    message, fix = _refused(
        _deploy(api, tmp_path, "b", "replicas: 1\nresources:\n  memory: 64Mi\n  pids: 256\n")
    )
    assert message == (
        "The services on this server hold 800 of the 1,000 processes they may have at once "
        "(service_pids), and b asks for 256 (1 replica × pids: 256)."
    )
    assert "ORCH_SERVICE_PIDS" in fix


def test_a_stopped_service_holds_nothing_and_its_restart_must_fit(
    api: httpx.Client, budgets: Platform, tmp_path: Path
) -> None:
    assert _deploy(api, tmp_path, "a", "resources:\n  memory: 1Gi\n").status_code == 201
    work(budgets)
    assert api.post("/v1/services/a/stop").status_code == 200
    assert _deploy(api, tmp_path, "b", "resources:\n  memory: 1Gi\n").status_code == 201  # a's room
    work(budgets)
    message, fix = _refused(api.post("/v1/services/a/restart"))
    assert message.startswith("This workspace's services hold 1 GiB of memory, and a asks for 1 GiB")
    assert fix == (
        "Stop or delete a service you no longer need (`orch service stop NAME`), then restart it again; "
        "or deploy it anew: ask for fewer replicas: or less memory: in orch.yaml."
    )
    with budgets.store.session() as s:
        assert s.scalar(select(ServiceRow.desired).where(ServiceRow.name == "a")) == "stopped"
    assert api.post("/v1/services/b/stop").status_code == 200
    assert api.post("/v1/services/a/restart").status_code == 200


def test_a_version_past_a_budget_alone_is_refused_with_400(
    api: httpx.Client, budgets: Platform, tmp_path: Path
) -> None:
    resp = _deploy(api, tmp_path, "big", "replicas: 5\nresources:\n  memory: 512Mi\n")
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"] == (
        "big asks for 2.5 GiB (5 replicas × memory: 512 MiB) of memory, more than the 2 GiB that all "
        "services on this server may have at once (service_memory)."
    )
    assert (
        resp.json()["fix"]
        == "Ask for at most 1.5 GiB in all: ask for fewer replicas: or less memory: in orch.yaml."
    )
    resp = _deploy(api, tmp_path, "big", "replicas: 4\nresources:\n  memory: 16Mi\n  pids: 300\n")
    assert resp.status_code == 400, resp.text
    assert resp.json()["message"] == (
        "big asks for 1,200 (4 replicas × pids: 300) processes, more than the 1,000 that all services "
        "on this server may have at once (service_pids)."
    )
    assert _stored(budgets) == (0, 0)


def test_the_cli_says_it_in_a_sentence_with_exit_2(cli, budgets: Platform, tmp_path: Path) -> None:
    app = tmp_path / "big"
    app.mkdir()
    (app / "main.py").write_text("")
    (app / "orch.yaml").write_text("replicas: 3\nresources:\n  memory: 600Mi\n")  # 1.8 GiB of the 1.5
    result = cli("service", "deploy", str(app), "--name", "big")
    assert result.exit_code == 2, result.output
    assert "may hold at once (max_service_memory)" in result.output and "Traceback" not in result.output


def test_while_a_smaller_version_deploys_the_serving_one_is_still_held(
    api: httpx.Client, budgets: Platform, tmp_path: Path
) -> None:
    """The serving version runs on until the new one serves, and for good if it fails: a smaller
    redeploy under way counted alone let others take what the old one still held (found by a
    tester: the services then held 640 MiB of their 512)."""
    assert _deploy(api, tmp_path, "a", "replicas: 2\nresources:\n  memory: 512Mi\n").status_code == 201
    work(budgets)
    assert _deploy(api, tmp_path, "a", "resources:\n  memory: 128Mi\n").status_code == 201  # under way
    message, _ = _refused(_deploy(api, tmp_path, "b", "resources:\n  memory: 1536Mi\n", _other(budgets)))
    assert message.startswith("The services on this server hold 1 GiB of the 2 GiB of memory")


def test_a_service_over_a_lowered_budget_can_still_be_made_smaller(
    api: httpx.Client, budgets: Platform, tmp_path: Path
) -> None:
    assert _deploy(api, tmp_path, "a", "replicas: 2\nresources:\n  memory: 640Mi\n").status_code == 201
    work(budgets)
    # 1.25 GiB held, then the operator lowers the budget to 1 GiB: a smaller version goes in.
    budgets.config = budgets.config.with_values(service_memory=1024 * MiB, max_service_memory=1024 * MiB)
    assert _deploy(api, tmp_path, "a", "replicas: 2\nresources:\n  memory: 448Mi\n").status_code == 201
    work(budgets)
    message, _ = _refused(_deploy(api, tmp_path, "b", "resources:\n  memory: 256Mi\n"))
    assert message.startswith("The services on this server hold 896 MiB of the 1 GiB of memory")
