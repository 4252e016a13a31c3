"""A real Chromium, signed in to the web UI, visits a public service whose page tries to act as
its visitor: read the API, change things through it and through the UI's forms, open a private
service. Services are served on their own origin, so each attempt fails and nothing changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import serving, sign_in
from tests.integration.conftest import Server
from tests.integration.test_runs import write
from tests.integration.test_services import HTTP_SERVICE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The hostile page: its script tries each attack with the visitor's cookies, then writes what
# it saw into the page for the test to read.
HOSTILE_PAGE = r"""
<!doctype html><title>innocent</title>
<iframe name="sink"></iframe>
<iframe name="sink2"></iframe>
<script>
const api = new URLSearchParams(location.search).get("api");
const theirs = new URLSearchParams(location.search).get("token");
const seen = {};
async function attempt(name, call) {
  try { seen[name] = await call(); } catch (e) { seen[name] = "blocked: " + e.name; }
}
(async () => {
  const withCookie = {credentials: "include"};
  await attempt("read_secrets", async () => (await fetch(api + "/v1/secrets", withCookie)).status);
  await attempt("stop_service", async () => {
    await fetch(api + "/v1/services/hostile/stop", {method: "POST", mode: "no-cors", credentials: "include"});
    return "sent";
  });
  await attempt("private_service", async () =>
    (await fetch("/services/default/quiet/", {credentials: "include"})).status);
  const form = document.createElement("form");
  form.method = "POST"; form.action = api + "/ui/settings/secrets"; form.target = "sink";
  for (const [k, v] of [["name", "STOLEN"], ["value", "x"]]) {
    const input = document.createElement("input"); input.name = k; input.value = v; form.append(input);
  }
  document.body.append(form);
  const loaded = new Promise((done) => document.querySelector("iframe").addEventListener("load", done));
  form.submit();
  await Promise.race([loaded, new Promise((done) => setTimeout(done, 10000))]);
  seen.form = "submitted";
  // Login CSRF: sign the visitor in to the attacker's own workspace, then frame its Settings
  // for the visitor to click in (clickjacking).
  const login = document.createElement("form");
  login.method = "POST"; login.action = api + "/ui/login"; login.target = "sink2";
  for (const [k, v] of [["token", theirs], ["next", "/ui/settings"]]) {
    const input = document.createElement("input"); input.name = k; input.value = v; login.append(input);
  }
  document.body.append(login);
  const sink2 = document.querySelector("[name=sink2]");
  const signedIn = new Promise((done) => sink2.addEventListener("load", done));
  login.submit();
  await Promise.race([signedIn, new Promise((done) => setTimeout(done, 10000))]);
  seen.login = "submitted";
  const framed = document.createElement("iframe");
  framed.id = "framed";
  const shown = new Promise((done) => framed.addEventListener("load", done));
  framed.src = api + "/ui/settings";
  document.body.append(framed);
  await Promise.race([shown, new Promise((done) => setTimeout(done, 10000))]);
  seen.framed = "loaded";
  document.body.dataset.seen = JSON.stringify(seen);
})();
</script>
"""

HOSTILE_SERVICE = serving(HOSTILE_PAGE)


def test_a_public_services_page_cannot_act_as_its_signed_in_visitor(
    page: Page, server: Server, tmp_path: Path
) -> None:
    for name, code, flags in (("hostile", HOSTILE_SERVICE, ["--public"]), ("quiet", HTTP_SERVICE, [])):
        res = server.cli(
            "service", "deploy", str(write(tmp_path / name, {"main.py": code})), "--name", name, *flags
        )
        assert res.returncode == 0, res.stdout + res.stderr
    hostile = server.get("/v1/services/hostile")
    assert hostile["url"].startswith(server.services_url)
    with server.api() as admin:
        theirs = admin.post("/v1/workspaces", json={"name": "beta"}).json()["token"]
    sign_in(page, server)
    page.goto(f"{hostile['url']}?api={server.url}&token={theirs}")
    page.wait_for_function("document.body.dataset.seen", timeout=30_000)
    seen = json.loads(page.evaluate("document.body.dataset.seen"))
    # Another origin: the browser keeps the API's answer from the page (no CORS).
    assert seen["read_secrets"].startswith("blocked"), seen
    # On the services' origin the UI's cookie is no token.
    assert seen["private_service"] == 401, seen
    # What the page could send with the cookie changed nothing.
    assert server.get("/v1/services/hostile")["state"] == "running"
    assert [s["name"] for s in server.get("/v1/secrets")] == []
    # The page could not sign its visitor in to another workspace, nor show them the UI in a frame.
    framed = [f for f in page.frames if f.url.startswith(server.url)]
    assert framed == [] or all("Save secret" not in f.content() for f in framed), [f.url for f in framed]
    page.goto("/ui/settings")
    assert "STOLEN" not in page.content()
    expect(page.locator(".logout")).to_contain_text("workspace default")
