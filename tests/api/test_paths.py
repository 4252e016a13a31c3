"""An escaped '/' in an API path is refused, not decoded into another route (server/paths.py)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.test_agents_runs import bundle, publish


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
