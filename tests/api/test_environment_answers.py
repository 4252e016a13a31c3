"""What the environments API answers where it said something else than the docs
(docs/environments.md): the default refused for a build that failed otherwise than at a step,
the log of an environment with no build, and a Dockerfile past the request's bound."""

from __future__ import annotations

import httpx

from orch.dockerfile.bounded import MAX_TEXT
from orch.services.platform import Platform
from orch.store.schema import BuildRow
from orch.workers import builds
from tests.conftest import drain

GOOD = "FROM e2bdev/code-interpreter:latest\nRUN echo slow\n"


def test_a_build_stopped_by_the_server_twice_is_built_again_not_recreated(
    api: httpx.Client, platform: Platform
) -> None:
    resp = api.post("/v1/environments", json={"name": "slow2", "dockerfile": GOOD})
    assert resp.status_code == 201, resp.text
    for _ in range(builds.MAX_ATTEMPTS):  # a worker takes it, and the server stops meanwhile
        build_id = builds.claim(platform)
        assert build_id is not None
        with platform.store.session() as s:
            builds._interrupted(platform, s, s.get(BuildRow, build_id))
    env = api.get("/v1/environments/slow2").json()
    assert env["status"] == "failed" and env["build"]["failed_step"] is None
    assert "Build it again with `orch env build slow2`" in env["error"]
    resp = api.put("/v1/workspace/default-environment", json={"environment": "slow2"})
    assert resp.status_code == 409 and "its build failed" in resp.json()["message"]
    fix = resp.json()["fix"]
    assert "build it again with `orch env build slow2`" in fix, fix
    assert "delete" not in fix and "Dockerfile fixed" not in fix, fix
    # A step that failed is still fixed by a new environment (its Dockerfile is kept).
    bad = "FROM e2bdev/code-interpreter:latest\nRUN exit 1\n"
    assert api.post("/v1/environments", json={"name": "broken", "dockerfile": bad}).status_code == 201
    drain(platform)
    resp = api.put("/v1/workspace/default-environment", json={"environment": "broken"})
    assert resp.status_code == 409 and "delete it and create it again" in resp.json()["fix"]


def test_the_log_of_a_base_environment_says_its_status(api: httpx.Client) -> None:
    assert api.get("/v1/environments/python").json()["status"] == "ready"
    chunk = api.get("/v1/environments/python/logs").json()
    # A follower asks "until status is ready or failed": it ends here.
    assert chunk == {"text": "", "offset": 0, "size": 0, "more": False, "status": "ready", "build_id": None}
    # A predefined one never built is not built, as its own view says.
    assert api.get("/v1/environments/python-ml").json()["status"] == "not-built"
    assert api.get("/v1/environments/python-ml/logs").json()["status"] == "not-built"


def test_a_dockerfile_past_the_request_bound_is_told_the_limit_that_holds(api: httpx.Client) -> None:
    text = GOOD + "RUN echo " + "x" * (4 * MAX_TEXT)  # over 1 MiB
    for path, body in [
        ("/v1/environments/validate", {"dockerfile": text}),
        ("/v1/environments", {"name": "huge", "dockerfile": text}),
    ]:
        resp = api.post(path, json=body)
        assert resp.status_code == 422 and resp.json()["error"] == "invalid_input", resp.text
        message = resp.json()["message"]
        assert message == "The request is not valid: dockerfile is longer than 262,144 characters.", message
    assert api.get("/v1/environments/huge").status_code == 404
