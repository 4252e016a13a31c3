"""A real Chromium visits a public service whose page script sets `orch_token` cookies (its
author's token), then opens the web UI. Services' default address is on another host name than
the UI's (localhost, the UI's 127.0.0.1), and browsers keep cookies by host name, so the UI
never reads them: the visitor is not signed in to the author's workspace (docs/services.md,
"Their own origin")."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import serving
from tests.integration.conftest import Server
from tests.integration.test_runs import write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOSSING_PAGE = r"""
<!doctype html><title>innocent</title>
<script>
const theirs = new URLSearchParams(location.search).get("token");
for (const path of ["/", "/ui", "/ui/settings"]) {
  document.cookie = "orch_token=" + theirs + "; path=" + path;
}
document.title = "tossed";
</script>
"""

TOSSING_SERVICE = serving(TOSSING_PAGE)


def test_a_public_services_cookies_do_not_sign_its_visitor_in_to_the_ui(
    page: Page, server: Server, tmp_path: Path
) -> None:
    ui = urlsplit(server.url)
    assert urlsplit(server.services_url).hostname == "localhost" and ui.hostname == "127.0.0.1"
    with server.api() as admin:
        theirs = admin.post("/v1/workspaces", json={"name": "evil"}).json()["token"]
    res = server.cli(
        "service", "deploy", str(write(tmp_path / "toss", {"main.py": TOSSING_SERVICE})), "--public"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    url = server.get("/v1/services/toss")["url"]
    assert url.startswith(server.services_url)

    page.goto(f"{url}?token={theirs}")  # a visitor with no orch cookie
    page.wait_for_function("document.title === 'tossed'")
    jar = page.context.cookies()
    assert {c["domain"] for c in jar if c["name"] == "orch_token"} == {"localhost"}, jar
    page.goto(f"{server.url}/ui/settings")
    assert urlsplit(page.url).path == "/ui/login", page.url  # not signed in: asked for a token
    assert "workspace evil" not in page.content()
    # The UI asked by the services' host name sends the browser to its own address, where the
    # tossed cookies are not.
    page.goto(f"http://localhost:{ui.port}/ui/settings")
    assert urlsplit(page.url).netloc == ui.netloc and urlsplit(page.url).path == "/ui/login", page.url
    assert "workspace evil" not in page.content()
