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


def test_a_restarting_server_leaves_the_other_servers_builds_alone(make_server, postgres_url: str) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL one server while both build, start it again: its own interrupted build is queued
    again (and run once more), the other server's build goes on untouched and runs once."""
    servers: list[Server] = [make_server("a"), make_server("b")]
    for s in servers:
        s.settings = {"ORCH_DATABASE_URL": postgres_url, "ORCH_BUILD_WORKERS": "1"}
        s.start()
    a, b = servers
    with a.api() as api:
        for i in range(2):
            dockerfile = f"FROM e2bdev/code-interpreter:latest\nRUN sleep 6 && echo {i} > /slow-{i}\n"
            resp = api.post("/v1/environments", json={"name": f"slow-{i}", "dockerfile": dockerfile})
            assert resp.status_code == 201, resp.text
        deadline = time.monotonic() + 120
        while [api.get(f"/v1/environments/slow-{i}").json()["status"] for i in range(2)] != ["building"] * 2:
            assert time.monotonic() < deadline, "both servers never built at once"
            time.sleep(0.2)
        b.kill()
        b.start()
        while not all(api.get(f"/v1/environments/slow-{i}").json()["status"] == "ready" for i in range(2)):
            assert time.monotonic() < deadline + 180, "the builds never finished"
            time.sleep(0.5)
        envs = [api.get(f"/v1/environments/slow-{i}").json() for i in range(2)]
    ran_by = {s.home.name: {p.stem for p in (s.home / "logs" / "builds").glob("*.log")} for s in servers}
    attempts = {e["build_id"]: e["build"]["attempts"] for e in envs}
    # b's interrupted build is queued again at its restart; whichever server is free then may run
    # it (a, done with its own, often is). a's own build ran once, on a alone.
    (a_build,) = [build for build, n in attempts.items() if n == 1]
    (b_build,) = [build for build, n in attempts.items() if n == 2]
    assert a_build in ran_by["a"] and a_build not in ran_by["b"], ran_by
    assert b_build in ran_by["b"], ran_by
    assert "queued again" not in (a.home / "logs" / "builds" / f"{a_build}.log").read_text()
