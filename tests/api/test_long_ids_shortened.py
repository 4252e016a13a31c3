"""An unknown run, sandbox, token or workspace is quoted in its 404 as agents are: whole up to 70
characters, else its start and its length (`orch.models.shown_name`). A 60,000-character id
was repeated whole, a 60 KB answer (found by a tester)."""

from __future__ import annotations

import httpx
import pytest


def shown(length: int) -> str:
    return f"'{'r' * 60}… ({length} characters)'"


ID = "r" * 60_000
FIELD = "r" * 200  # the longest `before` or `workspace` a request may give
NO_RUN = f"No run {shown(60_000)} in this workspace."
NO_SANDBOX = f"No sandbox {shown(60_000)} in this workspace."


@pytest.mark.parametrize(
    ("method", "path", "said"),
    [
        pytest.param("GET", f"/v1/runs/{ID}", NO_RUN, id="run"),
        pytest.param("GET", f"/v1/runs/{ID}/logs", NO_RUN, id="run-logs"),
        pytest.param("GET", f"/v1/runs/{ID}/events", NO_RUN, id="run-events"),
        pytest.param("POST", f"/v1/runs/{ID}/cancel", NO_RUN, id="run-cancel"),
        pytest.param(
            "GET", f"/v1/runs?before={FIELD}", f"No run {shown(200)} in this workspace.", id="runs-before"
        ),
        pytest.param("GET", f"/v1/sandboxes/{ID}", NO_SANDBOX, id="sandbox"),
        pytest.param("DELETE", f"/v1/sandboxes/{ID}", NO_SANDBOX, id="sandbox-remove"),
        pytest.param("GET", f"/v1/sandboxes/{ID}/files?path=a", NO_SANDBOX, id="sandbox-file"),
        pytest.param("DELETE", f"/v1/tokens/{ID}", f"No token {shown(60_000)}.", id="token-revoke"),
        pytest.param(
            "GET", f"/v1/tokens?workspace={FIELD}", f"No workspace {shown(200)}.", id="tokens-workspace"
        ),
    ],
)
def test_an_unknown_long_id_is_shortened_in_its_404(
    api: httpx.Client, method: str, path: str, said: str
) -> None:
    resp = api.request(method, path)
    assert resp.status_code == 404, resp.text
    assert resp.json()["message"] == said and len(resp.content) < 1000


def test_an_unknown_short_id_is_quoted_whole(api: httpx.Client) -> None:
    resp = api.get("/v1/runs/run_nothere00")
    assert resp.status_code == 404 and resp.json()["message"] == "No run 'run_nothere00' in this workspace."
