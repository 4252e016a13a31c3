"""Browser tests: Debian's Chromium driven by Playwright, against a real `orch server` on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.integration.conftest import Server, make_server, server  # noqa: F401 - shared fixtures

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# No background traffic: this machine's network is closed, and Chromium would keep trying.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one module: Playwright's sync API marks its event loop running in the main
    thread while it is open, and every later `asyncio.run` in that test process would refuse."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(30_000)
    yield p
    context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, server: Server) -> None:  # noqa: F811
    page.goto("/ui/environments")
    page.get_by_label("API token").fill(server.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/environments")


def serving(page: str) -> str:
    """A service (main.py) that answers every GET with `page`, as HTML."""
    return f"""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = {page!r}.encode()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass

print("listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""
