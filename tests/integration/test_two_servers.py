"""Two `orch server` processes on one PostgreSQL database share the build queue: every build is
taken by exactly one of them, once."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUILDS = 6


def test_two_servers_never_run_the_same_build_twice(make_server, postgres_url: str) -> None:  # type: ignore[no-untyped-def]
    servers: list[Server] = [make_server("a"), make_server("b")]
    for s in servers:
        s.settings = {"ORCH_DATABASE_URL": postgres_url, "ORCH_BUILD_WORKERS": "1"}
        s.start()
    a, b = servers
    # Each build takes a while, so that while one server is busy the other claims the next.
    ids = []
    with a.api() as api:
        for i in range(BUILDS):
            dockerfile = f"FROM e2bdev/code-interpreter:latest\nRUN sleep 1 && echo {i} > /built-{i}\n"
            resp = api.post("/v1/environments", json={"name": f"shared-{i}", "dockerfile": dockerfile})
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["build_id"])
        deadline = time.monotonic() + 300
        while True:
            envs = [api.get(f"/v1/environments/shared-{i}").json() for i in range(BUILDS)]
            if all(e["status"] in ("ready", "failed") for e in envs):
                break
            assert time.monotonic() < deadline, [e["status"] for e in envs]
            time.sleep(0.5)
    # Both servers see the same store: b's CLI lists what a queued.
    listed = b.cli("env", "list", "--json")
    assert listed.returncode == 0 and all(f"shared-{i}" in listed.stdout for i in range(BUILDS))
    assert [e["status"] for e in envs] == ["ready"] * BUILDS, [e["error"] for e in envs]
    assert [e["build"]["attempts"] for e in envs] == [1] * BUILDS
    # A server writes the log of each build it runs into its own ORCH_HOME: each build's log is
    # in exactly one of them, and both servers took some.
    ran_by = {s.home.name: {p.stem for p in (s.home / "logs" / "builds").glob("*.log")} for s in servers}
    assert ran_by["a"].isdisjoint(ran_by["b"]), ran_by
    assert ran_by["a"] | ran_by["b"] >= set(ids), ran_by
    assert ran_by["a"] & set(ids) and ran_by["b"] & set(ids), ran_by
    print(
        f"\ntwo servers, one PostgreSQL: {BUILDS} builds, a ran {len(ran_by['a'] & set(ids))}, "
        f"b ran {len(ran_by['b'] & set(ids))}, none twice"
    )
