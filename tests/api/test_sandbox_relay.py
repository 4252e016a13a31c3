"""Sandboxes on demand on a cluster (docs/scale.md#sandboxes-on-demand-on-a-cluster): the cluster's
server holds none itself; it relays a create to the node with the most room and a command or a
file to the node that holds the sandbox, through that node's proxy (real uvicorn here, over the
fake engine and a fake holder); a lost node's sandboxes fail with `node lost`; the node answers
the cluster's servers only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from orch.cli.sandbox import _summary
from orch.engine.fake import FakeEngine
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.server import relay
from orch.server.node_proxy import NodeProxy
from orch.services import nodes, sandboxes
from orch.services.nodes import Joining
from orch.services.platform import Platform
from orch.services.run_memory import Budget
from orch.store.schema import NodeRow, SandboxRow
from tests.api.conftest import caller, unanswered
from tests.api.test_cli import cli
from tests.api.test_nodes import node
from tests.api.test_service_relay import KEY, cluster_server

NDJSON = {"Accept": "application/x-ndjson"}
__all__ = ["cli"]  # the fixture


@pytest.fixture
def platform(tmp_path: Path, fake_engine: FakeEngine, database_url: str) -> Iterator[Platform]:
    yield from cluster_server(tmp_path, fake_engine, database_url)


@contextmanager
def serving(tmp_path: Path, database_url: str, name: str) -> Iterator[tuple[Platform, FakeHolder]]:
    """Node `name` with a fake holder of sandboxes, serving on its proxy."""
    with node(tmp_path, database_url, name, secret_key=KEY) as found:
        holder = FakeHolder()
        found.held.holders.update({Isolation.RUNC: holder, Isolation.GVISOR: holder})
        proxy = NodeProxy(found, "127.0.0.1", 0)
        proxy.start()
        me = Joining(
            id=name,
            address="127.0.0.1",
            cpus=2,
            memory=2**33,
            slots=4,
            ray_node=f"ray-{name}",
            proxy=proxy.address,
        )
        nodes.register(found, me)
        try:
            yield found, holder
        finally:
            proxy.stop()


@pytest.fixture
def two(tmp_path: Path, database_url: str) -> Iterator[dict[str, tuple[Platform, FakeHolder]]]:
    with ExitStack() as stack:
        yield {n: stack.enter_context(serving(tmp_path, database_url, n)) for n in ("a", "b")}


def owner(platform: Platform, sandbox_id: str) -> str:
    with platform.store.session() as s:
        row = s.get(SandboxRow, sandbox_id)
        assert row is not None
        return row.owner


def busy(platform: Platform, node_id: str, running: int) -> None:
    with platform.store.session() as s:
        s.execute(update(NodeRow).where(NodeRow.id == node_id).values(running=running))


def test_a_sandbox_is_held_by_a_node_and_driven_through_the_server(
    api: httpx.Client, platform: Platform, two: dict[str, tuple[Platform, FakeHolder]]
) -> None:
    busy(platform, "a", 4)  # a is full: b has the room
    resp = api.post("/v1/sandboxes", json={})
    assert resp.status_code == 201, resp.text
    sb = resp.json()
    b, holder = two["b"]
    assert owner(platform, sb["id"]) == b.instance and (sb["status"], sb["node"]) == ("running", "b")
    assert holder.last().spec.name.endswith(sb["id"]) and not two["a"][1].opened
    assert platform.held.ids() == []  # the server holds nothing itself
    assert _summary(sb).endswith("removed after 600 s idle · on node b")  # `orch sandbox create`

    url = f"/v1/sandboxes/{sb['id']}"
    done = api.post(f"{url}/exec", json={"command": ["echo", "hi", "there"]})
    assert done.status_code == 200, done.text
    assert (done.json()["exit_code"], done.json()["stdout"]) == (0, "hi there\n")
    streamed = api.post(f"{url}/exec", json={"command": ["nope"]}, headers=NDJSON)
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert lines[0] == {"stream": "stderr", "data": "orch: nope: command not found\n"}
    assert lines[-1]["exit_code"] == 127

    data = bytes(range(256)) * 10
    put = api.put(f"{url}/files", params={"path": "dir/blob.bin"}, content=data)
    assert put.status_code == 200, put.text
    assert holder.last().files == {"/home/user/dir/blob.bin": data}
    assert api.get(f"{url}/files", params={"path": "dir/blob.bin"}).content == data
    missing = api.get(f"{url}/files", params={"path": "nothing"})
    assert missing.status_code == 404 and missing.json()["message"].startswith("No file")

    # Removed through the server: the row says so at once, the node's reaper tears it down.
    assert api.delete(url).status_code == 204
    assert sandboxes.reap(b) == [sb["id"]] and b.held.ids() == []
    assert api.get(url).json()["status"] == "removed"
    gone = api.post(f"{url}/exec", json={"command": ["true"]})
    assert gone.status_code == 409 and "removed" in gone.json()["message"]


def test_sandboxes_spread_over_the_nodes_by_room(
    api: httpx.Client, platform: Platform, two: dict[str, tuple[Platform, FakeHolder]]
) -> None:
    made = [api.post("/v1/sandboxes", json={}).json()["id"] for _ in range(4)]
    by = {n: sum(owner(platform, i) == p.instance for i in made) for n, (p, _) in two.items()}
    assert by == {"a": 2, "b": 2}


def test_a_lost_node_s_sandboxes_fail_and_none_is_made_without_a_node(
    api: httpx.Client, platform: Platform, two: dict[str, tuple[Platform, FakeHolder]]
) -> None:
    sb = api.post("/v1/sandboxes", json={}).json()
    nodes.settle_lost(platform, alive_ray_nodes=[])  # Ray says both machines are gone
    shown = api.get(f"/v1/sandboxes/{sb['id']}").json()
    assert (shown["status"], shown["reason"]) == ("failed", "node lost")
    refused = api.post(f"/v1/sandboxes/{sb['id']}/exec", json={"command": ["true"]})
    assert refused.status_code == 409 and "failed (node lost)" in refused.json()["message"]
    none = api.post("/v1/sandboxes", json={})
    assert none.status_code == 503
    assert none.json()["message"] == "No node of the cluster is up to hold a sandbox."
    assert "orch node start" in none.json()["fix"]


def test_a_node_answers_sandbox_calls_of_the_cluster_s_servers_only(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    two: dict[str, tuple[Platform, FakeHolder]],
) -> None:
    sb = api.post("/v1/sandboxes", json={}).json()
    held_by = next(p for p, _ in two.values() if p.instance == owner(platform, sb["id"]))
    with platform.store.session() as s:
        at = s.get(NodeRow, held_by.node).proxy  # type: ignore[union-attr]
        ws_id = s.get(SandboxRow, sb["id"]).workspace_id  # type: ignore[union-attr]
    url = f"http://{at}/v1/sandboxes/{sb['id']}/exec"
    body = {"command": ["echo", "hi"]}
    ws_header = relay.WORKSPACE_HEADER.decode()
    with httpx.Client(trust_env=False, timeout=10) as client:
        for headers in (
            {},
            {"Authorization": f"Bearer {workspace[1]}"},  # a workspace's token opens nothing here
            {"orch-relay-token": "0" * 64, ws_header: ws_id},
            {"orch-relay-token": relay.token(held_by.config)},  # no workspace named
        ):
            refused = client.post(url, json=body, headers=headers)
            assert refused.status_code == 401, (headers, refused.text)
        headers = {"orch-relay-token": relay.token(held_by.config), ws_header: ws_id}
        assert client.post(url, json=body, headers=headers).json()["stdout"] == "hi\n"


def test_a_client_that_leaves_stops_its_command_on_the_node(
    two: dict[str, tuple[Platform, FakeHolder]],
    workspace: tuple[str, str],
    served: tuple[str, str],
) -> None:
    """As on one machine: a collected command whose client went away is stopped, here on the
    node, through the relayed request the server closes."""
    token = {"Authorization": f"Bearer {workspace[1]}"}
    with httpx.Client(base_url=served[0], headers=token, trust_env=False, timeout=30) as client:
        sb = client.post("/v1/sandboxes", json={}).json()  # all through one server's event loop
    held = next(h for _, h in two.values() if h.opened).last()
    body = {"command": ["sleep", "60"], "timeout": 90}
    with caller(served[0], "POST", f"/v1/sandboxes/{sb['id']}/exec", token, body) as leaving:
        # The client leaves once its command runs on the node (given 30 s on a slow, busy
        # machine), unanswered.
        deadline = time.monotonic() + 30
        while not (held.busy and held.commands) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held.commands[-1:] == [["sleep", "60"]], "the command never reached the node"
        assert unanswered(leaving)
    deadline = time.monotonic() + 15  # well before the command ends (the fake sleeps 30 s at most)
    while held.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held.commands[-1] == ["sleep", "60"] and not held.busy


def test_orch_sandbox_list_says_which_node_holds_each(  # type: ignore[no-untyped-def]
    cli, api: httpx.Client, platform: Platform, two: dict[str, tuple[Platform, FakeHolder]]
) -> None:
    busy(platform, "a", 4)
    made = api.post("/v1/sandboxes", json={}).json()["id"]
    lines = cli("sandbox", "list").stdout.splitlines()
    assert lines[0].split()[-1] == "NODE"
    assert lines[1].split()[0] == made and lines[1].split()[-1] == "b"


def test_a_sandbox_goes_to_a_node_whose_sandboxes_leave_its_memory(
    api: httpx.Client, platform: Platform, two: dict[str, tuple[Platform, FakeHolder]]
) -> None:
    MiB = 2**20
    for name, (node_platform, _) in two.items():
        node_platform.run_memory = Budget(1024 * MiB)
        with platform.store.session() as s:
            s.execute(update(NodeRow).where(NodeRow.id == name).values(memory_budget=1024 * MiB))
    busy(platform, "b", 2)  # a has more free slots
    big = api.post("/v1/sandboxes", json={"memory": "768Mi"}).json()
    assert big["node"] == "a"
    # a's sandboxes leave it 256 MiB: 512 MiB goes to b, though a still has more free slots.
    assert api.post("/v1/sandboxes", json={"memory": "512Mi"}).json()["node"] == "b"
    assert api.post("/v1/sandboxes", json={"memory": "256Mi"}).json()["node"] == "a"  # fits in a
    held = {name: p.run_memory.held_by_sandboxes // MiB for name, (p, _) in two.items()}
    assert held == {"a": 1024, "b": 512}
    # A node that does not say its budget (one from before it was said) is taken to have room.
    with platform.store.session() as s:
        s.execute(update(NodeRow).where(NodeRow.id == "b").values(memory_budget=None))  # an older node
    assert api.post("/v1/sandboxes", json={"memory": "256Mi"}).json()["node"] == "b"  # b says nothing: fits
    bad = api.post("/v1/sandboxes", json={"memory": "lots"})  # the node's route answers what is wrong
    assert bad.status_code == 400 and bad.json()["message"] == "memory: 'lots' is not a size."
    assert api.post("/v1/sandboxes", content=b"[1, 2]").status_code == 422
