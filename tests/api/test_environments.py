"""The environments API, in-process, on the fake engine."""

from __future__ import annotations

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services import build_output
from orch.services.platform import Platform
from tests.conftest import build_log, drain

GOOD = """\
FROM e2bdev/code-interpreter:latest
RUN pip install six
ENV GREETING=hello
CMD ["python"]
"""


def create(api: httpx.Client, name: str, text: str = GOOD, **extra: object) -> dict:
    resp = api.post("/v1/environments", json={"name": name, "dockerfile": text, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_list_has_base_and_predefined(api: httpx.Client) -> None:
    envs = api.get("/v1/environments").json()
    by_name = {e["name"]: e for e in envs}
    assert by_name["python"]["kind"] == "base"
    assert by_name["python"]["status"] == "ready"
    assert by_name["node"]["kind"] == "base"
    for name in ("python-ml", "python-ffmpeg", "python-image", "python-scraping"):
        assert by_name[name]["kind"] == "predefined"
        assert by_name[name]["status"] == "not-built"
        assert by_name[name]["id"].startswith("env_")
    assert not any(e["default"] for e in envs)


def test_token_required(api: httpx.Client) -> None:
    resp = api.get("/v1/environments", headers={"Authorization": ""})
    assert resp.status_code == 401
    assert "token" in resp.json()["message"]
    resp = api.get("/v1/environments", headers={"Authorization": "Bearer orch_wrong"})
    assert resp.status_code == 401


def test_a_nul_in_a_reference_is_a_plain_400(api: httpx.Client) -> None:
    # PostgreSQL refuses a NUL even in a lookup: these answered 500 there (found by schemathesis).
    for path in ["/v1/environments/py%00thon", "/v1/agents/a%00", "/v1/services/a%00", "/v1/tokens/tok_%00"]:
        method = "DELETE" if path.startswith("/v1/tokens/") else "GET"
        resp = api.request(method, path)
        assert resp.status_code == 400, (path, resp.text)
        assert resp.json()["message"] == "The URL holds a NUL character (%00), which no name or id contains."
    assert api.get("/v1/tokens", params={"workspace": "te\x00am"}).status_code == 400
    resp = api.put("/v1/workspace/default-environment", json={"environment": "python\x00"})
    assert resp.status_code == 422 and "NUL character" in resp.json()["message"]
    assert api.post("/v1/tokens", json={"name": "ci", "workspace": "te\x00am"}).status_code == 422
    # Without a valid token it is 401 all the same.
    assert api.get("/v1/environments/py%00thon", headers={"Authorization": ""}).status_code == 401


def test_create_builds_and_reports_warning(api: httpx.Client, platform: Platform) -> None:
    data = create(api, "scraper")
    assert data["status"] == "queued"
    assert data["cache"] == "miss" and data["cache_reason"] == "new Dockerfile"
    assert [w["instruction"] for w in data["warnings"]] == ["CMD"]
    assert drain(platform) == 1
    env = api.get("/v1/environments/scraper").json()
    assert env["status"] == "ready"
    assert env["image"].startswith(f"localhost/orch-env/{platform.instance}:")
    assert env["build"]["total_steps"] > 0 and env["build"]["step"] == env["build"]["total_steps"]
    log = api.get(f"/v1/environments/{env['id']}/logs").json()
    assert "STEP 1/" in log["text"] and log["status"] == "ready"
    again = api.get(f"/v1/environments/{env['id']}/logs", params={"offset": log["offset"]}).json()
    assert again["text"] == ""
    # Past 2**63 seek() raised and the call answered 500 (found by schemathesis).
    far = api.get(f"/v1/environments/{env['id']}/logs", params={"offset": 10603396877368336384})
    assert far.status_code == 200 and far.json()["text"] == ""


def test_same_dockerfile_is_a_cache_hit(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine
) -> None:
    first = create(api, "one")
    drain(platform)
    # Cosmetic differences (case, comments, continuation, ignored CMD) do not change the key.
    variant = (
        "# same thing\nfrom e2bdev/code-interpreter:latest\nRUN pip \\\n  install six\nENV GREETING=hello\n"
    )
    second = create(api, "two", variant)
    assert second["status"] == "ready"
    assert second["cache"] == "hit"
    assert "one" in second["cache_reason"] and first["id"] in second["cache_reason"]
    assert drain(platform) == 0
    assert len(fake_engine.builds) == 1
    assert second["image"] == api.get("/v1/environments/one").json()["image"]
    # Built again, each names the build that made the image: never itself, nor the copy, as its
    # source (two was "same Dockerfile as two", then one "as two").
    again = api.post("/v1/environments/two/build").json()
    assert again["cache_reason"] == f"same Dockerfile as one, {first['id']}", again
    again = api.post("/v1/environments/one/build").json()
    assert again["cache_reason"] == f"same Dockerfile as this environment's build {first['build_id']}"


def test_no_cache_forces_a_build(api: httpx.Client, platform: Platform, fake_engine: FakeEngine) -> None:
    create(api, "one")
    drain(platform)
    data = create(api, "two", no_cache=True)
    assert data["status"] == "queued" and data["cache_reason"] == "a build without the cache was asked for"
    assert drain(platform) == 1
    assert fake_engine.builds[-1].no_cache


def test_appended_step_is_a_miss(api: httpx.Client, platform: Platform) -> None:
    create(api, "one")
    drain(platform)
    data = create(api, "two", GOOD + "RUN pip install requests\n")
    assert data["cache"] == "miss" and data["cache_reason"] == "new Dockerfile"


def test_failed_build_names_step_and_output(api: httpx.Client, platform: Platform) -> None:
    create(api, "broken", "FROM e2bdev/code-interpreter:latest\nRUN echo start\nRUN exit 1\n")
    drain(platform)
    env = api.get("/v1/environments/broken").json()
    assert env["status"] == "failed"
    assert "Step 3/3" in env["error"] and "RUN exit 1" in env["error"]
    assert "error: step failed" in env["build"]["log_tail"]
    assert env["build"]["failed_step"].startswith("step 3/3")
    # Every run relying on the default would fail: refused, and the default stays as it was.
    resp = api.put("/v1/workspace/default-environment", json={"environment": "broken"})
    assert resp.status_code == 409 and "its build failed" in resp.json()["message"]
    assert "delete it and create it again" in resp.json()["fix"]
    assert api.get("/v1/workspace/default-environment").json()["default"] is None


def test_rejected_dockerfile_creates_nothing(api: httpx.Client) -> None:
    before = api.get("/v1/environments").json()
    resp = api.post(
        "/v1/environments",
        json={"name": "bad", "dockerfile": "FROM e2bdev/code-interpreter:latest\nCOPY . /app\n"},
    )
    assert resp.status_code == 422
    body = resp.json()
    assert "line 2" in body["message"] and "COPY" in body["message"]
    assert body["fix"]
    assert body["findings"][0]["line"] == 2
    assert api.get("/v1/environments").json() == before


def test_several_dockerfile_errors_are_counted_in_a_sentence(api: httpx.Client) -> None:
    # The message ended "...latest. (and 1 more)" (found by schemathesis with the Dockerfile "m").
    resp = api.post("/v1/environments", json={"name": "bad", "dockerfile": "m"})
    assert resp.status_code == 422
    message = resp.json()["message"]
    assert message.startswith("The Dockerfile is not valid: line 1 ")
    errors = [f for f in resp.json()["findings"] if f["severity"] == "error"]
    assert len(errors) == 2 and message.endswith(". 1 more error is listed in the findings.")


def test_empty_dockerfile_rejected(api: httpx.Client) -> None:
    resp = api.post("/v1/environments", json={"name": "empty", "dockerfile": ""})
    assert resp.status_code == 422
    assert api.get("/v1/environments/empty").status_code == 404


def test_duplicate_and_invalid_names(api: httpx.Client) -> None:
    create(api, "dup")
    resp = api.post("/v1/environments", json={"name": "dup", "dockerfile": GOOD})
    assert resp.status_code == 409 and "already exists" in resp.json()["message"]
    resp = api.post("/v1/environments", json={"name": "python-ml", "dockerfile": GOOD})
    assert resp.status_code == 409
    resp = api.post("/v1/environments", json={"name": "Bad Name!", "dockerfile": GOOD})
    assert resp.status_code == 400 and "not valid" in resp.json()["message"]
    assert len([e for e in api.get("/v1/environments").json() if e["kind"] == "custom"]) == 1


def test_unknown_environment(api: httpx.Client) -> None:
    for ref in ("env_nope000000", "nope"):
        resp = api.get(f"/v1/environments/{ref}")
        assert resp.status_code == 404
        assert "`orch env list`" in resp.json()["fix"]
    assert api.delete("/v1/environments/nope").status_code == 404
    assert api.put("/v1/workspace/default-environment", json={"environment": "nope"}).status_code == 404


def test_default_and_delete_rules(api: httpx.Client, platform: Platform) -> None:
    env = create(api, "mine")
    drain(platform)
    resp = api.put("/v1/workspace/default-environment", json={"environment": env["id"]})
    assert resp.json()["default"]["name"] == "mine"
    listed = {e["name"]: e["default"] for e in api.get("/v1/environments").json()}
    assert listed["mine"] is True and listed["python"] is False
    refused = api.delete("/v1/environments/mine")
    assert refused.status_code == 409 and "Clear the workspace default" in refused.json()["fix"]
    assert api.get("/v1/environments/mine").status_code == 200
    cleared = api.delete("/v1/workspace/default-environment").json()
    assert cleared["default"]["name"] == "mine"
    assert api.get("/v1/workspace/default-environment").json()["default"] is None
    assert api.delete("/v1/environments/mine").status_code == 200
    assert api.get("/v1/environments/mine").status_code == 404


def test_predefined_cannot_be_deleted(api: httpx.Client) -> None:
    for name in ("python-ml", "python"):
        resp = api.delete(f"/v1/environments/{name}")
        assert resp.status_code == 400
        assert "can't be deleted" in resp.json()["message"]


def test_default_predefined_is_built_on_first_use(api: httpx.Client, platform: Platform) -> None:
    resp = api.put("/v1/workspace/default-environment", json={"environment": "python-ml"})
    assert resp.json()["default"]["status"] == "queued"
    assert drain(platform) == 1
    assert api.get("/v1/environments/python-ml").json()["status"] == "ready"


def test_delete_removes_image_only_when_unused(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine
) -> None:
    create(api, "a")
    drain(platform)
    b = create(api, "b")
    image = b["image"]
    api.delete("/v1/environments/a")
    assert fake_engine.inspect_image(image) is not None
    api.delete("/v1/environments/b")
    assert fake_engine.inspect_image(image) is None


def test_workspaces_are_isolated(api: httpx.Client, platform: Platform) -> None:
    from orch.services import workspaces

    create(api, "secret")
    with platform.store.session() as s:
        _, other = workspaces.create_workspace(s, "other")
    headers = {"Authorization": f"Bearer {other}"}
    assert api.get("/v1/environments/secret", headers=headers).status_code == 404
    names = [e["name"] for e in api.get("/v1/environments", headers=headers).json()]
    assert "secret" not in names
    # The same name is free in the other workspace.
    resp = api.post("/v1/environments", json={"name": "secret", "dockerfile": GOOD}, headers=headers)
    assert resp.status_code == 201


def test_bad_request_body_is_a_plain_message(api: httpx.Client) -> None:
    resp = api.post("/v1/environments", json={"name": "x"})
    assert resp.status_code == 422
    assert resp.json()["message"] == "The request is not valid: dockerfile is missing."
    # pydantic's own words ("String should have at most 200 characters") never reach a user.
    said = {
        "/v1/environments": ({"name": 5, "dockerfile": GOOD}, "name must be text"),
        "/v1/workspace/default-environment": ({"environment": "e" * 300}, "environment is longer than 200"),
        "/v1/sandboxes/sbx_0123456789/exec": ({"command": []}, "command needs at least 1 item"),
        "/v1/runs": ({"agent": "a", "timeout": "soon"}, "timeout must be a whole number"),
    }
    for path, (body, words) in said.items():
        sent = api.put(path, json=body) if "default" in path else api.post(path, json=body)
        message = sent.json()["message"]
        assert sent.status_code == 422 and "should" not in message and "Input" not in message, message
        assert words is None or f"The request is not valid: {words}" in message, message
    # A misspelt field is refused, not ignored (its default would silently apply).
    for path, body in [
        ("/v1/runs", {"agent": "a", "inptu": "{}"}),
        ("/v1/environments", {"name": "x", "dockerfile": GOOD, "nocache": True}),
        ("/v1/secrets/K", {"value": "v", "extra": 1}),
        ("/v1/tokens", {"name": "ci", "admn": True}),
    ]:
        sent = api.put(path, json=body) if "secrets" in path else api.post(path, json=body)
        assert sent.status_code == 422 and "is not a field of this request" in sent.json()["message"], (
            sent.text
        )
    # A name is bounded loosely by the request, then checked with the rule itself.
    resp = api.post("/v1/environments", json={"name": "n" * 300, "dockerfile": GOOD})
    assert resp.status_code == 400 and "(300 characters)' is not valid" in resp.json()["message"]
    assert "Use 1-63 lower-case letters" in resp.json()["fix"]


def test_unreadable_bodies_and_unknown_routes_get_sentences(api: httpx.Client) -> None:
    # Schemathesis found the first answering "There was an error parsing the body"; the others are
    # the same kind of answer from Starlette and FastAPI ("Not Found", "Method Not Allowed", and
    # "The request is not valid: 15: JSON decode error.").
    json_type = {"Content-Type": "application/json"}
    answers = {
        400: api.post("/v1/environments/validate", content=b"\xea\xf4", headers=json_type),
        422: api.post("/v1/environments/validate", content=b'{"dockerfile": ', headers=json_type),
        404: api.get("/v1/no-such-thing"),
        405: api.patch("/v1/environments"),
    }
    for status, resp in answers.items():
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["message"].endswith(".") and body["fix"].endswith("."), body
    assert "not JSON in UTF-8" in answers[400].json()["message"]
    assert "not valid JSON (Expecting value at character 15)" in answers[422].json()["message"]
    assert answers[404].json()["message"] == "Nothing is at /v1/no-such-thing."
    assert answers[405].json()["message"] == "/v1/environments does not take PATCH."
    assert "GET" in answers[405].headers["allow"]


def test_openapi_lists_routes(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert "/v1/environments" in paths and "/v1/workspace/default-environment" in paths
    assert api.get("/docs").status_code == 200


def test_leading_comment_is_the_description(api: httpx.Client) -> None:
    data = create(api, "described", "# syntax=docker/dockerfile:1\n# Scraping tools\n" + GOOD)
    assert data["description"] == "Scraping tools"
    assert create(api, "plain")["description"] == ""


def test_a_build_log_keeps_its_first_bytes_and_the_record_its_last_lines(
    api: httpx.Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_output, "MAX_LOG", 2000)
    steps = "".join(f"RUN echo step {i} {'x' * 60}\n" for i in range(100))  # ~9 KB of STEP lines
    env = create(api, "chatty", "FROM e2bdev/code-interpreter:latest\n" + steps)
    drain(platform)
    log = build_log(platform, env["build_id"])
    assert 2000 <= len(log.encode()) <= 2000 + 200
    assert log.endswith("(The output passed 0 MiB; the rest is not kept here.)\n")
    assert "step 0 " in log and "step 99 " not in log
    data = api.get("/v1/environments/chatty").json()
    assert data["status"] == "ready" and "step 99 " in data["build"]["step_text"]


def test_a_long_reference_that_names_nothing_is_shortened(api: httpx.Client) -> None:
    """A 5000-character reference was repeated whole in its 404's sentence."""
    ref = "x" * 5000
    resp = api.get(f"/v1/environments/{ref}")
    assert resp.status_code == 404
    assert resp.json()["message"] == f"No environment '{'x' * 60}… (5000 characters)' in this workspace."
