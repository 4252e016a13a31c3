"""What a person meets first: the server's address leads to the web UI."""

from __future__ import annotations

import httpx


def test_the_root_leads_to_the_ui(api: httpx.Client) -> None:
    res = api.get("/", headers={"Authorization": ""}, follow_redirects=False)
    assert res.status_code == 307 and res.headers["location"] == "/ui"
    page = api.get("/", headers={"Authorization": ""}, follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
