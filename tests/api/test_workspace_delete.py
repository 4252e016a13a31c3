"""Deleting a workspace through the API (in-process, both stores) and the CLI: who may, what
refuses it (and changes nothing), and that a delete removes every row of that workspace, its
images and cache mounts, and nothing of another workspace's, its namesakes included."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from sqlalchemy import Select, delete, event, func, select, update
from typer.testing import CliRunner

from orch.builder import cache_dirs
from orch.cli import client as client_mod
from orch.cli import utils as cli_utils
from orch.cli.main import app
from orch.dockerfile import cache_mounts
from orch.engine.fake import FakeEngine
from orch.errors import Conflict
from orch.models import SandboxStatus
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.services import agents, bundles, run_environment, sandboxes, secrets, usage, workspace_deletes
from orch.services.platform import Platform
from orch.services.workspaces import Caller
from orch.store.db import Gone, hold
from orch.store.schema import (
    AgentRow,
    AgentVersionRow,
    Base,
    BuildLogRow,
    BuildRow,
    EnvironmentRow,
    RunEventRow,
    RunOutputRow,
    RunRow,
    SandboxRow,
    SecretRow,
    ServiceDeploymentRow,
    ServiceLeaseRow,
    ServiceLogCursorRow,
    ServiceLogRow,
    ServiceReplicaRow,
    ServiceRow,
    TokenRow,
    WorkspaceRow,
    utcnow,
)
from tests.api.test_agents_runs import bundle, publish, run
from tests.api.test_services import deploy, work
from tests.api.test_workspaces import as_token, new_workspace
from tests.conftest import drain

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"
OWN_DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN pip install acme-only\n"
CACHED = "FROM e2bdev/code-interpreter:latest\nRUN --mount=type=cache,target=/root/.cache pip install six\n"


def _rows_of(ws_id: str) -> dict[str, Select[tuple[int]]]:
    """A count of each table's rows that belong to workspace `ws_id`, by table."""
    agents = select(AgentRow.id).where(AgentRow.workspace_id == ws_id)
    runs = select(RunRow.id).where(RunRow.workspace_id == ws_id)
    services = select(ServiceRow.id).where(ServiceRow.workspace_id == ws_id)
    envs = select(EnvironmentRow.id).where(EnvironmentRow.scope == ws_id)
    builds = select(BuildRow.id).where(BuildRow.environment_id.in_(envs))
    count = select(func.count())
    return {
        "workspaces": count.select_from(WorkspaceRow).where(WorkspaceRow.id == ws_id),
        "tokens": count.select_from(TokenRow).where(TokenRow.workspace_id == ws_id),
        "secrets": count.select_from(SecretRow).where(SecretRow.workspace_id == ws_id),
        "agents": count.select_from(AgentRow).where(AgentRow.workspace_id == ws_id),
        "agent_versions": count.select_from(AgentVersionRow).where(AgentVersionRow.agent_id.in_(agents)),
        "runs": count.select_from(RunRow).where(RunRow.workspace_id == ws_id),
        "run_output": count.select_from(RunOutputRow).where(RunOutputRow.run_id.in_(runs)),
        "run_events": count.select_from(RunEventRow).where(RunEventRow.run_id.in_(runs)),
        "sandboxes": count.select_from(SandboxRow).where(SandboxRow.workspace_id == ws_id),
        "services": count.select_from(ServiceRow).where(ServiceRow.workspace_id == ws_id),
        "service_replicas": count.select_from(ServiceReplicaRow).where(
            ServiceReplicaRow.service_id.in_(services)
        ),
        "service_deployments": count.select_from(ServiceDeploymentRow).where(
            ServiceDeploymentRow.service_id.in_(services)
        ),
        "service_log": count.select_from(ServiceLogRow).where(ServiceLogRow.service_id.in_(services)),
        "service_log_cursors": count.select_from(ServiceLogCursorRow).where(
            ServiceLogCursorRow.service_id.in_(services)
        ),
        "service_leases": count.select_from(ServiceLeaseRow).where(ServiceLeaseRow.service_id.in_(services)),
        "environments": count.select_from(EnvironmentRow).where(EnvironmentRow.scope == ws_id),
        "builds": count.select_from(BuildRow).where(BuildRow.id.in_(builds)),
        "build_log": count.select_from(BuildLogRow).where(BuildLogRow.build_id.in_(builds)),
    }


def counts(platform: Platform, ws_id: str) -> dict[str, int]:
    with platform.store.session() as s:
        return {table: int(s.scalar(q) or 0) for table, q in _rows_of(ws_id).items()}


def everything(platform: Platform) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, as text: what a refusal must leave as it was."""
    with platform.store.session() as s:
        return {
            t.name: sorted(tuple(map(str, row)) for row in s.execute(t.select()))
            for t in Base.metadata.sorted_tables
        }


@dataclass
class Tenants:
    """`team` (the admin's workspace, `api`) and `acme`, each holding one of every kind of thing
    under the same names; acme also has things of its own."""

    team_id: str
    acme_id: str
    acme: httpx.Client  # acme's plain token
    acme_only_sha: str  # the bundle of acme's own agent, which nothing else runs
    shared_sha: str  # the bundle both workspaces' `hello` run
    acme_image: str  # the image of acme's own environment
    cache_root: Path


def populate(client: httpx.Client, platform: Platform, tmp_path: Path, who: str) -> str:
    """One of every kind of thing, the same names in every workspace: a secret, an environment
    (built), an agent with a finished run, a stopped service; return the agent's bundle."""
    assert client.put("/v1/secrets/API_KEY", json={"value": f"{who}-value"}).status_code == 200
    assert (
        client.post("/v1/environments", json={"name": "tools", "dockerfile": DOCKERFILE}).status_code == 201
    )
    drain(platform)
    resp = publish(client, "hello", bundle(tmp_path / who, {"main.py": "print('hi')\n"}))
    assert resp.status_code == 201, resp.text
    assert run(client, platform, "hello")["status"] == "succeeded"
    deployed = deploy(client, "web", bundle(tmp_path / who, {"main.py": "print(1)\n"}, f"svc-{who}"))
    assert deployed.status_code == 201, deployed.text
    work(platform)
    assert client.post("/v1/services/web/stop").status_code == 200
    return str(resp.json()["version"]["bundle_sha256"])


@pytest.fixture
def tenants(
    api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Tenants:
    platform.probe = lambda address, port: True  # a service's container 'answers' (nothing runs)
    secrets.prepare(platform)
    created = new_workspace(api, "acme")
    acme = as_token(api, created["token"])
    team_id = next(w["id"] for w in api.get("/v1/workspaces").json() if w["name"] == "team")
    shared = populate(api, platform, tmp_path, "team")
    assert populate(acme, platform, tmp_path, "acme") == shared
    # acme's own: a second token, an agent nobody else has, an environment of its own Dockerfile.
    assert api.post("/v1/tokens", json={"name": "ci", "workspace": "acme"}).status_code == 201
    own = publish(acme, "solo", bundle(tmp_path / "acme", {"main.py": "print('solo')\n"}, "solo"))
    assert own.status_code == 201, own.text
    assert (
        acme.post("/v1/environments", json={"name": "own", "dockerfile": OWN_DOCKERFILE}).status_code == 201
    )
    drain(platform)
    image = acme.get("/v1/environments/own").json()["image"]
    # Cache mounts' directories of both workspaces, as their builds leave them.
    root = tmp_path / "buildah-cache"
    monkeypatch.setattr(cache_dirs, "root", lambda: root)
    for ws_id in (team_id, created["id"]):
        (root / f"orch-{cache_mounts.owner(platform.instance, ws_id)}-0123456789abcdef").mkdir(parents=True)
    return Tenants(team_id, created["id"], acme, own.json()["version"]["bundle_sha256"], shared, image, root)


def test_a_delete_removes_every_row_of_the_workspace_and_nothing_of_another(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tenants: Tenants
) -> None:
    with platform.store.session() as s:
        ended = SandboxRow(**_sandbox(tenants.acme_id, SandboxStatus.REMOVED))
        s.add(ended)
    acme_before, team_before = counts(platform, tenants.acme_id), counts(platform, tenants.team_id)
    kept = ("tokens", "agent_versions", "run_output", "service_deployments", "builds", "sandboxes")
    assert all(acme_before[t] for t in kept), acme_before
    totals_before = _totals(platform)
    service_images = fake_engine.images({"org.orch.service": _service_id(platform, tenants.acme_id)})
    assert service_images and fake_engine.inspect_image(tenants.acme_image) is not None

    resp = api.delete("/v1/workspaces/acme")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "workspace": "acme",
        "id": tenants.acme_id,
        "deleted_tokens": 2,
        "deleted_secrets": 1,
        "deleted_agents": 2,
        "deleted_versions": 2,
        "deleted_runs": 1,
        "deleted_sandboxes": 1,
        "deleted_services": 1,
        "deleted_environments": ["own", "tools"],
        "deleted_cache_mounts": 1,
    }
    assert not any(counts(platform, tenants.acme_id).values())
    assert counts(platform, tenants.team_id) == team_before
    # Nothing else went, and nothing of acme's is left without its workspace.
    assert _totals(platform) == {t: n - acme_before.get(t, 0) for t, n in totals_before.items()}
    assert tenants.acme.get("/v1/agents").status_code == 401
    # team's namesakes stay, and work.
    assert api.get("/v1/agents/hello").status_code == 200
    assert api.get("/v1/environments/tools").json()["status"] == "ready"
    assert [x["name"] for x in api.get("/v1/secrets").json()] == ["API_KEY"]
    assert api.get("/v1/services/web").status_code == 200
    # What lies outside the store: a bundle only acme ran, acme's own image and its service's
    # images, its cache mounts; team's bundle, image and cache mounts stay.
    assert not bundles.stored(platform, tenants.acme_only_sha)
    assert bundles.stored(platform, tenants.shared_sha)
    assert fake_engine.inspect_image(tenants.acme_image) is None
    assert fake_engine.images({"org.orch.service": service_images[0].labels["org.orch.service"]}) == []
    assert fake_engine.inspect_image(api.get("/v1/environments/tools").json()["image"]) is not None
    left = [p.name for p in tenants.cache_root.iterdir()]
    assert left == [f"orch-{cache_mounts.owner(platform.instance, tenants.team_id)}-0123456789abcdef"]
    assert [w["name"] for w in api.get("/v1/workspaces").json()] == ["team"]
    assert api.delete("/v1/workspaces/acme").status_code == 404
    # The name is free again.
    assert new_workspace(api, "acme")["id"] != tenants.acme_id


def test_an_environment_created_as_its_workspace_is_deleted_is_not_left_behind(
    api: httpx.Client, platform: Platform
) -> None:
    # An environment names its workspace without a foreign key: a create that read the workspace
    # before the delete committed, and wrote after, left an environment of no workspace.
    created = new_workspace(api, "acme")
    acme = as_token(api, created["token"])
    answers: list[httpx.Response] = []

    def create() -> None:
        answers.append(acme.post("/v1/environments", json={"name": "late", "dockerfile": DOCKERFILE}))

    late = threading.Thread(target=create)
    with platform.store.session() as s:
        hold(s, WorkspaceRow, created["id"])  # as the delete holds it
        late.start()
        time.sleep(1)  # the create is past its token check, at its transaction
        s.execute(delete(WorkspaceRow).where(WorkspaceRow.id == created["id"]))
    late.join(30)
    assert not late.is_alive()
    assert answers[0].status_code == 404, answers[0].text
    assert "no longer exists" in answers[0].json()["message"], answers[0].text
    assert counts(platform, created["id"])["environments"] == 0


GONE = (
    "What this request refers to (its workspace, agent or environment) was deleted at the same "
    "moment, so nothing was made."
)


def paused_after(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str
) -> tuple[threading.Event, threading.Event]:
    """`module.name` made to wait, once it has returned, until the second event is set; the
    first says that a request got there (past its token check)."""
    there, go = threading.Event(), threading.Event()
    original = getattr(module, name)

    def paused(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        there.set()
        assert go.wait(30)
        return result

    monkeypatch.setattr(module, name, paused)
    return there, go


@pytest.mark.parametrize("made", ["sandbox", "agent"])
def test_a_create_past_its_token_check_as_its_workspace_is_deleted_makes_nothing(
    api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made: str
) -> None:
    # Its workspace looked up again in the create's own transaction, found gone: an
    # AssertionError, answered 500 with a traceback in the log.
    created = new_workspace(api, "acme")
    acme = as_token(api, created["token"])
    holder = FakeHolder()
    platform.held.holders.update({Isolation.RUNC: holder, Isolation.GVISOR: holder})
    data = bundle(tmp_path, {"main.py": "print('late')\n"})
    there, go = (
        paused_after(monkeypatch, sandboxes, "_within_budgets")
        if made == "sandbox"
        else paused_after(monkeypatch, agents, "inspect_bundle")
    )
    answers: list[httpx.Response] = []

    def make() -> None:
        if made == "sandbox":
            answers.append(acme.post("/v1/sandboxes", json={}))
        else:
            answers.append(publish(acme, "late", data))

    late = threading.Thread(target=make)
    late.start()
    try:
        assert there.wait(30)
        assert api.delete("/v1/workspaces/acme").status_code == 200
    finally:
        go.set()
        late.join(30)
    assert not late.is_alive()
    assert answers[0].status_code == 409, answers[0].text
    assert answers[0].json()["message"] == GONE
    assert set(counts(platform, created["id"]).values()) == {0}
    assert holder.opened == []


@contextmanager
def deleted_after(platform: Platform, ws_id: str, *said: str) -> Iterator[None]:
    """The workspace `ws_id` deleted, and committed, right after the first statement holding
    each of `said` has run: a delete that commits between two reads of one request."""
    fired = threading.Event()

    def after(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if fired.is_set() or not all(part in statement for part in said):
            return
        fired.set()
        with platform.store.session() as s:
            s.execute(delete(WorkspaceRow).where(WorkspaceRow.id == ws_id))

    event.listen(platform.store.db, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(platform.store.db, "after_cursor_execute", after)
    assert fired.is_set()


@pytest.mark.parametrize("read", ["service", "token", "agent page", "environments page"])
def test_a_read_that_finds_its_workspace_deleted_meanwhile_says_so(
    api: httpx.Client, platform: Platform, tmp_path: Path, read: str
) -> None:
    # Each looked its workspace up after a first read and asserted it was there: a 500.
    created = new_workspace(api, "acme")
    ws_id, acme = created["id"], as_token(api, created["token"])
    if read == "service":  # shown by its own workspace's token
        with platform.store.session() as s:
            s.add(ServiceRow(id="svc_late", workspace_id=ws_id, name="web", state="stopped"))
        with deleted_after(platform, ws_id, "FROM services"):
            resp = acme.get("/v1/services/web")
    elif read == "token":  # revoked by an admin of another workspace
        with deleted_after(platform, ws_id, "count(*)", "FROM tokens"):
            resp = api.delete(f"/v1/tokens/{created['token_id']}")
    if read in ("service", "token"):
        assert resp.status_code == 409 and resp.json()["message"] == GONE, resp.text
        return
    # What the UI's pages show of an agent and of the environments, asked after the token check.
    assert publish(acme, "hello", bundle(tmp_path, {"main.py": ""})).status_code == 201
    with platform.store.session() as s:
        agent_id = s.scalar(select(AgentRow.id).where(AgentRow.workspace_id == ws_id))
        assert agent_id is not None
        s.execute(delete(WorkspaceRow).where(WorkspaceRow.id == ws_id))
    look = (
        partial(run_environment.would_run, platform, ws_id, agent_id)
        if read == "agent page"
        else partial(usage.users_by_environment, platform, ws_id)
    )
    with pytest.raises(Gone):
        look()


def test_refusals_change_nothing(api: httpx.Client, platform: Platform, tenants: Tenants) -> None:
    def refused(client: httpx.Client, ref: str, status: int, *said: str) -> dict:
        resp = client.delete(f"/v1/workspaces/{ref}")
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert all(text in body["message"] + " " + body["fix"] for text in said), body
        assert everything(platform) == before
        return dict(body)

    before = everything(platform)
    # A plain token: 403 whether the workspace exists or not, its own one included.
    for ref in ("team", "nowhere", "acme", tenants.acme_id):
        refused(tenants.acme, ref, 403, "Only an admin token can delete workspaces")
    refused(api, "nowhere", 404, "No workspace 'nowhere'.")
    for ref in ("team", tenants.team_id):  # the caller's own
        refused(api, ref, 409, "token making this call", "admin token of another workspace")
    # The last admin tokens: a caller whose own admin token is gone meanwhile.
    with platform.store.session() as s:
        acme_row = s.get(WorkspaceRow, tenants.acme_id)
        assert acme_row is not None
    stale = Caller(acme_row, "tok_gone", admin=True)
    with pytest.raises(Conflict) as e:
        workspace_deletes.delete_workspace(platform, stale, "team")
    assert "last admin tokens" in e.value.message and "orch token create --admin" in e.value.fix
    assert everything(platform) == before

    # Live things: a queued run, an open sandbox, a running service, a build under way.
    queued = tenants.acme.post("/v1/runs", json={"agent": "hello"}).json()["id"]
    with platform.store.session() as s:
        s.add(SandboxRow(**_sandbox(tenants.acme_id, SandboxStatus.RUNNING)))
    assert tenants.acme.post("/v1/services/web/restart").status_code == 200
    work(platform)
    assert (
        tenants.acme.post("/v1/environments", json={"name": "slow", "dockerfile": CACHED}).status_code == 201
    )
    before = everything(platform)
    body = refused(
        api,
        "acme",
        409,
        f"Workspace acme still has 1 unfinished run ({queued}), 1 open sandbox (sbx_",
        "1 service not stopped (web) and 1 environment being built (slow).",
        "orch runs cancel RUN",
        "orch sandbox rm ID",
        "orch service stop NAME",
        "wait for builds to end",
        "orch token create --workspace acme",
    )
    assert body["unfinished_runs"] == [queued] and body["live_services"] == ["web"]
    # Each alone refuses too; ended, the delete goes.
    assert tenants.acme.post(f"/v1/runs/{queued}/cancel").status_code == 200
    assert tenants.acme.post("/v1/services/web/stop").status_code == 200
    drain(platform)
    before = everything(platform)
    refused(api, "acme", 409, "1 open sandbox (sbx_", "orch sandbox rm ID")
    assert "unfinished run" not in api.delete("/v1/workspaces/acme").json()["message"]
    with platform.store.session() as s:
        s.execute(update(SandboxRow).values(status=SandboxStatus.REMOVED.value, removed_at=utcnow()))
    assert api.delete("/v1/workspaces/acme").status_code == 200


def _sandbox(ws_id: str, status: SandboxStatus) -> dict[str, object]:
    now = utcnow()
    return {
        "id": f"sbx_{status.value}",
        "workspace_id": ws_id,
        "status": status.value,
        "environment_id": "env_python",
        "environment_name": "python",
        "isolation": "runc",
        "image": "localhost/orch/python:x",
        "memory_bytes": 256 * 2**20,
        "cpus": 1.0,
        "pids": 64,
        "timeout": 60,
        "container": f"orch-x-{status.value}",
        "owner": "elsewhere",
        "deadline": now,
        "removed_at": now if status.final else None,
    }


def _service_id(platform: Platform, ws_id: str) -> str:
    with platform.store.session() as s:
        found = s.scalar(select(ServiceRow.id).where(ServiceRow.workspace_id == ws_id))
        assert found is not None
        return found


def _totals(platform: Platform) -> dict[str, int]:
    with platform.store.session() as s:
        return {
            t: int(s.scalar(select(func.count()).select_from(Base.metadata.tables[t])) or 0)
            for t in _rows_of("")
        }


runner = CliRunner()


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Result]:
    """The CLI as the admin of `team`, talking to the in-process app; `terminal` says whether
    standard input is a terminal."""

    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", token, transport=api._transport)

    token = api.headers["Authorization"].removeprefix("Bearer ")
    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(*args: str, answer: str | None = None) -> Result:
        monkeypatch.setattr(cli_utils, "terminal_input", lambda: answer is not None)
        return runner.invoke(app, list(args), input=answer)

    return invoke


def test_cli_asks_first_and_says_what_went(api: httpx.Client, cli: Callable[..., Result]) -> None:
    new_workspace(api, "acme")
    res = cli("workspace", "delete", "acme")  # no terminal, no --yes
    assert res.exit_code == 2 and "Deleting workspace acme needs confirmation" in res.output
    assert "Pass --yes" in res.output
    res = cli("workspace", "delete", "acme", answer="n\n")
    assert res.exit_code == 1 and "Nothing was deleted." in res.output
    assert "Delete workspace acme with all its tokens" in res.output
    assert {w["name"] for w in api.get("/v1/workspaces").json()} == {"team", "acme"}
    res = cli("workspace", "delete", "acme", answer="y\n")
    assert res.exit_code == 0, res.output
    assert "✓ Deleted workspace acme (ws_" in res.output and "1 token, 0 secrets" in res.output
    new_workspace(api, "acme")
    res = cli("workspace", "delete", "acme", "-y", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["workspace"] == "acme" and data["deleted_tokens"] == 1 and data["deleted_environments"] == []
    # Bad input: one sentence, exit 2, never a traceback.
    for args, said in [
        (("acme", "--yes"), "No workspace 'acme'."),
        (("team", "--yes"), "token making this call"),
        (("Bad Name", "--yes"), "No workspace 'Bad Name'."),
        (("", "--yes"), "An empty name"),
    ]:
        res = cli("workspace", "delete", *args)
        assert res.exit_code == 2 and said in res.output, res.output
        assert "Traceback" not in res.output
