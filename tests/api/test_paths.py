"""An escaped '/' in an API path is refused, not decoded into another route, and escapes that
are not UTF-8 are refused, not read as U+FFFD (server/paths.py)."""

from __future__ import annotations

from pathlib import Path

import httpx

from orch.sandbox.held_fake import FakeHolder
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_client import holder as holder  # a fixture


def test_an_escaped_slash_in_a_name_is_refused_before_routing(api: httpx.Client, tmp_path: Path) -> None:
    assert publish(api, "victim", bundle(tmp_path, {"main.py": "print(1)\n"})).status_code == 201
    # Decoded, this is DELETE /v1/agents/victim/versions/1: the route that deletes a version.
    for path in ("/v1/agents/victim%2Fversions%2F1", "/v1/agents/victim%2fversions%2f1", "/v1/agents/a%5Cb"):
        resp = api.delete(path)
        assert resp.status_code == 400, (path, resp.text)
        body = resp.json()
        assert body["error"] == "invalid_input" and "escaped '/'" in body["message"] and body["fix"]
    assert [v["version"] for v in api.get("/v1/agents/victim").json()["versions"]] == [1]
    # Other escapes still name what they spell (here, nothing).
    assert api.get("/v1/agents/victim%3Fx").status_code == 404


def test_escapes_that_are_not_utf8_are_refused_before_routing(api: httpx.Client, holder: FakeHolder) -> None:
    # ?path=%FF reached the route as U+FFFD, and a sandbox's file was written under a name the
    # caller did not give (found by a tester).
    sb = api.post("/v1/sandboxes", json={}).json()
    for url in (
        f"/v1/sandboxes/{sb['id']}/files?path=%FF",
        f"/v1/sandboxes/{sb['id']}/files?path=%ED%B0%80",  # a surrogate, which UTF-8 does not hold
        f"/v1/sandboxes/{sb['id']}/files?path=a&name=%C3",
        "/v1/agents/%FF",
    ):
        resp = api.put(url, content=b"x")
        assert resp.status_code == 400, (url, resp.text)
        assert "escaped bytes that are not UTF-8 text" in resp.json()["message"]
    assert holder.last().files == {}
    # UTF-8 text, escaped, is a name like any other.
    written = api.put(f"/v1/sandboxes/{sb['id']}/files", params={"path": "é.txt"}, content=b"x")
    assert written.status_code == 200 and written.json()["path"] == "/home/user/é.txt"
