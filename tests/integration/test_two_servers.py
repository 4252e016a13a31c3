"""Two `orch server` processes on one PostgreSQL database share the build queue: every build is
taken by exactly one of them, once."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ran_by(servers: list[Server], postgres_url: str) -> dict[str, set[str]]:
    """The builds each server claimed last (the store's `claimed_by`), by server name."""
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            claimed = conn.execute(text("SELECT id, claimed_by FROM builds")).all()
    finally:
        engine.dispose()
    return {s.home.name: {build for build, by in claimed if by == s.instance} for s in servers}


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
    # Each build was claimed once (attempts 1, above), by one of them, and both servers took some.
    took = ran_by(servers, postgres_url)
    assert took["a"] | took["b"] >= set(ids), took
    assert took["a"] & set(ids) and took["b"] & set(ids), took
    print(
        f"\ntwo servers, one PostgreSQL: {BUILDS} builds, a ran {len(took['a'] & set(ids))}, "
        f"b ran {len(took['b'] & set(ids))}, none twice"
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
        logs = {e["build_id"]: api.get(f"/v1/environments/{e['name']}/logs").json()["text"] for e in envs}
    took = ran_by(servers, postgres_url)
    attempts = {e["build_id"]: e["build"]["attempts"] for e in envs}
    # b's interrupted build is queued again at its restart, by b (a restarting server settles only
    # its own claims, and says so in the log); whichever server is free then may run it (a, done
    # with its own, often is). a's own build ran once, on a alone.
    (a_build,) = [build for build, n in attempts.items() if n == 1]
    (b_build,) = [build for build, n in attempts.items() if n == 2]
    assert a_build in took["a"], took
    assert "queued again" not in logs[a_build]
    assert "The server stopped during this build; it was queued again." in logs[b_build]
