"""Deleting agents and versions through the API (in-process, both stores), and publishing an
agent whose environment failed to build."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from orch.errors import Conflict
from orch.models import RunStatus, new_id
from orch.services import agent_deletes, bundles
from orch.services.agents import latest_version, resolve_agent
from orch.services.platform import Platform
from orch.store.schema import RunOutputRow, RunRow
from tests.api.test_agents_runs import bundle, publish, run
from tests.conftest import drain, drain_runs

FAILING = "FROM e2bdev/code-interpreter:latest\nRUN exit 1\n"
GOOD = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"


def published(api: httpx.Client, tmp_path: Path, name: str, files: dict[str, str], **kw: bool) -> dict:
    resp = publish(api, name, bundle(tmp_path, files, f"{name}-{len(list(tmp_path.iterdir()))}"), **kw)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def output_rows(platform: Platform, run_id: str) -> int:
    with platform.store.session() as s:
        return len(s.scalars(select(RunOutputRow.start).where(RunOutputRow.run_id == run_id)).all())


def test_delete_agent_removes_versions_runs_and_unshared_bundles(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    v1 = published(api, tmp_path, "hello", {"main.py": "print(1)\n"})["version"]
    v2 = published(api, tmp_path, "hello", {"main.py": "print(2)\n"})["version"]
    done = run(api, platform, "hello")
    assert done["status"] == "succeeded" and output_rows(platform, done["id"]) > 0
    # Another agent with v1's files (same bundle), a service deployment with v2's.
    published(api, tmp_path, "twin", {"main.py": "print(1)\n"})
    deployed = api.post(
        "/v1/services/svc/deploy",
        content=bundle(tmp_path, {"main.py": "print(2)\n"}, "svc"),
        headers={"Content-Type": "application/gzip"},
    )
    assert deployed.status_code == 201, deployed.text
    v3 = published(api, tmp_path, "hello", {"main.py": "print(3)\n"})["version"]

    resp = api.delete("/v1/agents/hello")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "agent": "hello",
        "id": resp.json()["id"],
        "deleted_versions": [1, 2, 3],
        "deleted_runs": 1,
        "latest_version": None,
        "unused_environments": [],
        "notes": [],
    }
    assert api.get("/v1/agents/hello").status_code == 404
    assert api.get(f"/v1/runs/{done['id']}").status_code == 404
    assert api.get("/v1/runs").json() == []
    assert output_rows(platform, done["id"]) == 0
    # Bundles still referred to (by an agent or a service) stay; the rest go.
    assert bundles.stored(platform, v1["bundle_sha256"])
    assert bundles.stored(platform, v2["bundle_sha256"])
    assert not bundles.stored(platform, v3["bundle_sha256"])
    assert api.delete("/v1/agents/twin").status_code == 200
    assert not bundles.stored(platform, v1["bundle_sha256"])
    assert not (platform.config.home / "bundles" / v1["bundle_sha256"]).exists()  # the extracted copy
    assert api.delete("/v1/agents/hello").status_code == 404
    # The name is free again, and numbering starts afresh for the new agent.
    again = published(api, tmp_path, "hello", {"main.py": "print(4)\n"})
    assert again["version"]["version"] == 1 and again["agent"]["id"] != resp.json()["id"]


def test_refused_while_a_run_has_not_ended(api: httpx.Client, platform: Platform, tmp_path: Path) -> None:
    published(api, tmp_path, "hello", {"main.py": "print(1)\n"})
    published(api, tmp_path, "hello", {"main.py": "print(2)\n"})
    queued = api.post("/v1/runs", json={"agent": "hello"}).json()  # of v2; no worker runs it
    for url in ("/v1/agents/hello", "/v1/agents/hello/versions/2"):
        resp = api.delete(url)
        assert resp.status_code == 409, resp.text
        body = resp.json()
        assert queued["id"] in body["message"] and "has not ended" in body["message"]
        assert "cancel" in body["fix"] and body["unfinished_runs"]
    # Nothing changed.
    assert [v["version"] for v in api.get("/v1/agents/hello").json()["versions"]] == [2, 1]
    assert api.get(f"/v1/runs/{queued['id']}").json()["status"] == "queued"
    # Another version's runs are not in the way.
    assert api.delete("/v1/agents/hello/versions/1").status_code == 200
    assert api.post(f"/v1/runs/{queued['id']}/cancel").status_code == 200
    resp = api.delete("/v1/agents/hello")
    assert resp.status_code == 200 and resp.json()["deleted_runs"] == 1


def test_delete_version_moves_latest_and_never_reuses_numbers(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    for i in (1, 2, 3):
        published(api, tmp_path, "hello", {"main.py": f"print({i})\n"})
    resp = api.delete("/v1/agents/hello/versions/3")
    assert resp.status_code == 200, resp.text
    assert (resp.json()["deleted_versions"], resp.json()["latest_version"]) == ([3], 2)
    shown = api.get("/v1/agents/hello").json()
    assert shown["latest_version"] == 2 and [v["version"] for v in shown["versions"]] == [2, 1]
    assert run(api, platform, "hello")["agent_version"] == 2
    assert published(api, tmp_path, "hello", {"main.py": "print(4)\n"})["version"]["version"] == 4
    resp = api.delete("/v1/agents/hello/versions/1")  # not the latest: the latest stays
    assert resp.status_code == 200 and resp.json()["latest_version"] == 4
    for missing in ("3", "9", "0", "-1", str(2**64)):
        resp = api.delete(f"/v1/agents/hello/versions/{missing}")
        assert resp.status_code == 404, (missing, resp.text)
        assert resp.json()["message"] == f"hello has no version {missing}."
    bad = api.delete("/v1/agents/hello/versions/x")
    assert bad.status_code == 422 and bad.json()["message"] and bad.json()["fix"]
    assert api.delete("/v1/agents/hello/versions/2").json()["deleted_runs"] == 1
    only = api.delete("/v1/agents/hello/versions/4")
    assert only.status_code == 409
    assert "only version" in only.json()["message"] and "Delete the agent itself" in only.json()["fix"]
    assert api.get("/v1/agents/hello").json()["latest_version"] == 4


# PostgreSQL only: SQLite lets one transaction write at a time, so the two never interleave there.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_run_being_created_holds_off_a_delete_of_its_version(
    api: httpx.Client, platform: Platform, tmp_path: Path, workspace: tuple[str, str], database_url: str
) -> None:
    """A run created while its version is being deleted is either seen by the delete (which then
    refuses) or refused itself; never a run of a version that is gone."""
    published(api, tmp_path, "hello", {"main.py": "print(1)\n"})
    published(api, tmp_path, "hello", {"main.py": "print(2)\n"})
    outcome: list[object] = []

    def delete() -> None:
        try:
            outcome.append(agent_deletes.delete_version(platform, workspace[0], "hello", 2))
        except Conflict as e:
            outcome.append(e)

    with platform.store.session() as s:  # what runs.create does, held open
        version = latest_version(s, resolve_agent(s, workspace[0], "hello"))
        s.add(
            RunRow(
                id=new_id("run"),
                workspace_id=workspace[0],
                agent_id=version.agent_id,
                agent_version_id=version.id,
                status=RunStatus.QUEUED.value,
            )
        )
        s.flush()
        deleting = threading.Thread(target=delete)
        deleting.start()
        deleting.join(1.0)
        assert deleting.is_alive()  # waiting for the run's transaction
    deleting.join(30)
    (refused,) = outcome
    assert isinstance(refused, Conflict) and "hello v2 has 1 run that has not ended" in refused.message
    assert api.get("/v1/agents/hello").json()["latest_version"] == 2


def test_deleting_frees_the_environments_it_used(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    assert api.post("/v1/environments", json={"name": "shared", "dockerfile": GOOD}).status_code == 201
    drain(platform)
    published(api, tmp_path, "pinner", {"main.py": "", "orch.yaml": "environment: shared\n"})
    docked = published(
        api, tmp_path, "docked", {"main.py": "", "Dockerfile": GOOD + "ENV X=1\n"}, docker=True
    )
    own = docked["version"]["dockerfile_environment"]["name"]
    assert own == "docked-dockerfile"
    drain(platform)
    for env in ("shared", own):
        assert api.delete(f"/v1/environments/{env}").status_code == 409
    assert api.delete("/v1/agents/pinner").json()["unused_environments"] == []  # pins are the user's
    assert api.delete("/v1/agents/docked").json()["unused_environments"] == [own]
    for env in ("shared", own):
        assert api.delete(f"/v1/environments/{env}").status_code == 200


def test_deleting_a_version_names_no_environment_that_the_latest_still_uses(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """v2 deleted, v1 (the latest now) is built from the same Dockerfile: its environment is
    still used (it was named unused, and `orch env delete` then refused it)."""
    files = {"Dockerfile": GOOD + "ENV Y=1\n"}
    published(api, tmp_path, "dock", {"main.py": "", **files}, docker=True)
    v2 = published(api, tmp_path, "dock", {"main.py": "# v2\n", **files}, docker=True)
    own = v2["version"]["dockerfile_environment"]["name"]
    drain(platform)
    deleted = api.delete("/v1/agents/dock/versions/2")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["latest_version"] == 1 and deleted.json()["unused_environments"] == []
    assert api.delete(f"/v1/environments/{own}").status_code == 409  # v1 uses it
    # With the last version that uses it gone (the agent), it is named.
    assert api.delete("/v1/agents/dock").json()["unused_environments"] == [own]


def test_deleting_never_names_an_environment_the_workspace_made_that_a_publish_reused(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """`orch env create` made scraper-plus; a publish with the same Dockerfile reuses it. The
    delete named it unused (inviting `orch env delete` of the user's own environment); one that a
    publish made is still named."""
    mine = GOOD + "ENV MINE=1\n"
    assert api.post("/v1/environments", json={"name": "scraper-plus", "dockerfile": mine}).status_code == 201
    drain(platform)
    published(api, tmp_path, "dock", {"main.py": "", "Dockerfile": mine})  # v1: the Dockerfile unused
    v2 = published(api, tmp_path, "dock", {"main.py": "", "Dockerfile": mine}, docker=True)
    assert v2["version"]["dockerfile_environment"]["name"] == "scraper-plus"
    deleted = api.delete("/v1/agents/dock/versions/2")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["unused_environments"] == []
    # Made by a publish, then reused by another agent's: named once neither uses it.
    made = published(api, tmp_path, "maker", {"main.py": "", "Dockerfile": GOOD + "ENV M=1\n"}, docker=True)
    own = made["version"]["dockerfile_environment"]["name"]
    assert own == "maker-dockerfile"
    reused = published(
        api, tmp_path, "reuser", {"main.py": "", "Dockerfile": GOOD + "ENV M=1\n"}, docker=True
    )
    assert reused["version"]["dockerfile_environment"]["name"] == own
    drain(platform)
    assert api.delete("/v1/agents/maker").json()["unused_environments"] == []  # reuser uses it
    assert api.delete("/v1/agents/reuser").json()["unused_environments"] == [own]
    assert api.delete("/v1/environments/scraper-plus").status_code == 200  # no agent uses it


def test_a_rollback_to_a_version_whose_environment_is_gone_or_failed_says_so(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """As publish warns for a pin whose build failed, deleting the latest version warns when the
    version that is the latest now would fail because of its environment (the tester's F11)."""
    for name, dockerfile in (("inuse", GOOD), ("broken", FAILING), ("temp", GOOD + "ENV T=1\n")):
        assert api.post("/v1/environments", json={"name": name, "dockerfile": dockerfile}).status_code == 201
    drain(platform)
    published(api, tmp_path, "pin", {"main.py": "", "orch.yaml": "environment: inuse\n"})
    published(api, tmp_path, "pin", {"main.py": "", "orch.yaml": "environment: broken\n"})
    published(api, tmp_path, "pin", {"main.py": ""})
    published(api, tmp_path, "pin", {"main.py": "print(4)\n"})
    assert api.delete("/v1/environments/inuse").status_code == 200  # only the latest counts as a user
    assert api.delete("/v1/agents/pin/versions/4").json()["notes"] == []  # v3 runs in the base
    (failed,) = api.delete("/v1/agents/pin/versions/3").json()["notes"]
    assert failed.startswith(
        "v2, the latest version now, runs in environment broken, whose last build failed ("
    )
    assert failed.endswith("See its build log, then rebuild it or pin another environment.")
    assert api.delete("/v1/agents/pin/versions/1").json()["notes"] == []  # not the latest
    published(api, tmp_path, "gone", {"main.py": "", "orch.yaml": "environment: temp\n"})
    published(api, tmp_path, "gone", {"main.py": "print(2)\n"})
    assert api.delete("/v1/environments/temp").status_code == 200
    assert api.delete("/v1/agents/gone/versions/2").json()["notes"] == [
        "Runs of v1, the latest version now, will fail: The pinned environment 'temp' no longer "
        "exists. Create it again, or pin another environment in orch.yaml and publish again."
    ]


def test_another_workspace_cannot_delete(
    api: httpx.Client, platform: Platform, tmp_path: Path, workspace: tuple[str, str]
) -> None:
    published(api, tmp_path, "hello", {"main.py": "print(1)\n"})
    agent = published(api, tmp_path, "hello", {"main.py": "print(2)\n"})["agent"]
    other = api.post("/v1/workspaces", json={"name": "other"}).json()["token"]
    headers = {"Authorization": f"Bearer {other}"}
    for ref in ("hello", agent["id"]):
        for url in (f"/v1/agents/{ref}", f"/v1/agents/{ref}/versions/1"):
            resp = api.delete(url, headers=headers)
            assert resp.status_code == 404, resp.text
            assert resp.json()["message"] == f"No agent {ref!r} in this workspace."
    assert [v["version"] for v in api.get("/v1/agents/hello").json()["versions"]] == [2, 1]


@pytest.mark.parametrize("how", ["pinned", "docker"])
def test_publish_says_when_its_environment_failed(
    api: httpx.Client, platform: Platform, tmp_path: Path, how: str
) -> None:
    if how == "pinned":
        assert api.post("/v1/environments", json={"name": "broken", "dockerfile": FAILING}).status_code == 201
        drain(platform)
        answer = published(api, tmp_path, "hello", {"main.py": "", "orch.yaml": "environment: broken\n"})
        (note,) = answer["notes"]
        assert note.startswith("orch.yaml pins environment broken, whose last build failed (Step 2/2")
        assert "See its build log, then rebuild it" in note
        return
    first = published(api, tmp_path, "hello", {"main.py": "", "Dockerfile": FAILING}, docker=True)
    assert first["notes"] == []
    env = first["version"]["dockerfile_environment"]
    drain(platform)
    assert api.get(f"/v1/environments/{env['id']}").json()["status"] == "failed"
    again = published(api, tmp_path, "hello", {"main.py": "", "Dockerfile": FAILING}, docker=True)
    # The same environment is built again (not hello-dockerfile-2, -3, ... for each attempt), and
    # the answer says the last attempt failed.
    assert again["version"]["dockerfile_environment"] == env
    (note,) = again["notes"]
    assert note.startswith(f"This Dockerfile failed to build before, as environment {env['name']} (Step 2/2")
    assert api.get(f"/v1/environments/{env['id']}").json()["status"] == "queued"
    assert [e["name"] for e in api.get("/v1/environments").json() if e["kind"] == "custom"] == [env["name"]]


def test_a_queued_run_whose_version_went_fails_with_its_reason(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """A store from before deletes checked for queued runs in one step may hold such a run: its
    worker crashed on it ("internal error: NoResultFound", a traceback in the log)."""
    published(api, tmp_path, "hello", {"main.py": "print(1)\n"})
    queued = api.post("/v1/runs", json={"agent": "hello"}).json()
    with platform.store.session() as s:
        row = s.get(RunRow, queued["id"])
        assert row is not None
        row.agent_version_id = new_id("agv")  # its version, deleted under it
    drain_runs(platform)
    with platform.store.session() as s:
        done = s.get(RunRow, queued["id"])
        assert done is not None and done.status == RunStatus.FAILED.value
        assert done.reason == "The run's agent version was deleted after the run was queued."
