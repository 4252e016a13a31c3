"""The web UI's pages as a browser gets them, in-process: who may sign in and out, the headers
that keep other sites' pages from framing or misusing them, what a page says from its URL (only
fixed sentences, or names checked against the workspace), and the forms' answers. Page
behaviour (the script) is in tests/e2e/."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from orch.services import run_events, workspaces
from orch.services.platform import Platform
from tests.api.conftest import client_of
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_build_logs import FAILING
from tests.api.test_loop_publish import allow
from tests.api.test_sandboxes import create
from tests.api.test_sandboxes import holder as holder  # the fake sandbox holder: a fixture
from tests.conftest import drain

OWN = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
SERVICES_PAGE = {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:8751"}
OTHER_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}


@pytest.fixture
def browser(api: httpx.Client, workspace: tuple[str, str]) -> httpx.Client:
    """The in-process app as a signed-in browser calls it: the UI's cookie, no Authorization."""
    return httpx.Client(
        transport=api._transport, base_url="http://testserver", cookies={"orch_token": workspace[1]}
    )


@pytest.fixture
def other_token(platform: Platform) -> str:
    """A token of another workspace ("beta"), as an attacker holds one of their own."""
    with platform.store.session() as s:
        return workspaces.create_workspace(s, "beta")[1]


def mine(browser: httpx.Client) -> dict[str, str]:
    """The field a page's changing forms carry: the workspace the page was rendered for (read from
    a page, as the browser has it)."""
    found = re.search(r'name="workspace" value="([^"]+)"', browser.get("/ui/settings").text)
    assert found, "the page's forms name no workspace"
    return {"workspace": found.group(1)}


def alert(html: str) -> str:
    found = re.search(r'role="alert"[^>]*>(.*?)</p>', html, re.S)
    return found.group(1).strip() if found else ""


# ---- signing in and out ----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [SERVICES_PAGE, OTHER_SITE, {"Origin": "https://evil.example"}])
def test_another_page_cannot_sign_the_visitor_in_or_out(
    browser: httpx.Client, workspace: tuple[str, str], other_token: str, headers: dict[str, str]
) -> None:
    form = {"token": other_token, "next": "/ui/settings"}
    login = browser.post("/ui/login", data=form, headers=headers)
    assert login.status_code == 403
    assert "This sign-in comes from a page of another origin, so it is refused" in alert(login.text)
    assert "set-cookie" not in login.headers
    logout = browser.post("/ui/logout", headers=headers)
    assert logout.status_code == 403 and "set-cookie" not in logout.headers
    # Still signed in as the workspace it was.
    assert "workspace team" in browser.get("/ui/settings").text


def test_the_sign_in_page_signs_in_and_out(browser: httpx.Client, other_token: str) -> None:
    login = browser.post("/ui/login", data={"token": other_token, "next": "/ui/settings"}, headers=OWN)
    assert login.status_code == 303 and login.headers["location"] == "/ui/settings"
    assert f"orch_token={other_token}" in login.headers["set-cookie"]
    logout = browser.post("/ui/logout", headers=OWN)
    assert logout.status_code == 303 and 'orch_token=""' in logout.headers["set-cookie"]


def test_signing_in_and_out_removes_the_cookies_another_page_set_at_paths_of_its_own(
    browser: httpx.Client, workspace: tuple[str, str]
) -> None:
    """A service's script on the UI's host name set `orch_token` at path /ui: Sign out removed
    only the UI's own (path /), and the visitor was still signed in, to the attacker's workspace."""
    logout = browser.post("/ui/logout", headers=OWN)
    assert logout.headers["clear-site-data"] == '"cookies"'  # every cookie of the host, any path
    expired = [c for c in logout.headers.get_list("set-cookie") if c.startswith('orch_token=""')]
    assert {re.search(r"Path=([^;]*)", c).group(1) for c in expired} >= {"/", "/ui", "/ui/"}  # type: ignore[union-attr]
    login = browser.post("/ui/login", data={"token": workspace[1], "next": "/ui/settings"}, headers=OWN)
    cookies = login.headers.get_list("set-cookie")
    assert any(c.startswith('orch_token=""') and "Path=/ui;" in c for c in cookies)
    assert cookies[-1].startswith(f"orch_token={workspace[1]};") and "Path=/" in cookies[-1]


def test_two_sign_in_cookies_sign_the_visitor_out_of_both(
    app: FastAPI, workspace: tuple[str, str], other_token: str
) -> None:
    """A browser sends every `orch_token` whose path fits, the UI's own and one another page of
    the host set: which is the UI's can't be told, so neither counts."""
    with client_of(app, "unused") as client:
        client.headers.pop("Authorization")
        two = {"Cookie": f"orch_token={other_token}; orch_token={workspace[1]}"}
        page = client.get("/ui/settings", headers=two)
        assert page.status_code == 303 and page.headers["clear-site-data"] == '"cookies"'
        query = parse_qs(urlsplit(page.headers["location"]).query)
        assert query == {"next": ["/ui/settings"], "error": ["two-cookies"]}
        said = alert(client.get(page.headers["location"]).text)
        assert said.startswith("Your browser sent two sign-in cookies, one of them set by another page")
        api = client.get("/v1/secrets", headers=two)
        assert api.status_code == 401
        assert api.json()["message"].startswith("This request carries two web UI sign-in cookies")
        # The error page of an address that is no page names no workspace either (its menu read
        # the last cookie: the one another page set, if its path was longer).
        nowhere = client.get("/ui/nowhere", headers=two)
        assert nowhere.status_code == 404 and "Sign in at /ui/login" in nowhere.text
        assert "workspace team" not in nowhere.text and "workspace beta" not in nowhere.text
        # The same in two Cookie headers (a proxy passing HTTP/2's apart): both are read.
        apart = [("Cookie", f"orch_token={other_token}"), ("Cookie", f"orch_token={workspace[1]}")]
        assert client.get("/v1/secrets", headers=apart).status_code == 401
        assert parse_qs(urlsplit(client.get("/ui/runs", headers=apart).headers["location"]).query)[
            "error"
        ] == ["two-cookies"]
        same = {"Cookie": f"orch_token={workspace[1]}; orch_token={workspace[1]}"}
        assert client.get("/v1/secrets", headers=same).status_code == 200  # one value: one cookie


@pytest.mark.parametrize(
    ("size", "said"),
    [
        (2 * 2**20, "A field of the form is larger than the 1 MiB the server reads, so nothing was saved"),
        (9 * 2**20, "The form is larger than the 8 MiB the server reads, so nothing was saved"),
    ],
)
def test_a_form_too_large_goes_back_to_its_page_with_a_sentence(
    browser: httpx.Client, api: httpx.Client, size: int, said: str
) -> None:
    """A 2 MiB secret value got Starlette's "Field exceeded maximum size of 1024KB." with a fix
    that did not apply; a 9 MiB one the API's raw JSON 413. A form answers as any form that
    fails: back to its page, with orch's sentence there."""
    resp = browser.post(
        "/ui/settings/secrets", data={"name": "BIG", "value": "x" * size, **mine(browser)}, headers=OWN
    )
    assert resp.status_code == 303, resp.text[:300]
    target = urlsplit(resp.headers["location"])
    assert (target.path, target.fragment) == ("/ui/settings", "secrets")
    page = browser.get(resp.headers["location"])
    assert alert(page.text).startswith(said), alert(page.text)
    assert "Enter a shorter value." in page.text and "workspace team" in page.text
    assert api.get("/v1/secrets").json() == []  # nothing saved
    # A pasted token as large: the sign-in page says so in a fixed sentence of its own.
    with httpx.Client(transport=browser._transport, base_url="http://testserver") as anonymous:
        login = anonymous.post("/ui/login", data={"token": "x" * size, "next": "/ui/runs"}, headers=OWN)
        assert login.status_code == 303 and "set-cookie" not in login.headers
        assert alert(anonymous.get(login.headers["location"]).text).startswith(
            "What was sent is larger than the server reads of a form (over 1 MiB), far longer than a token."
        )


@pytest.mark.parametrize("path", ["/ui/runs?before=%00", "/ui/agents/x%00y", "/ui/settings?secret=%00"])
def test_a_nul_in_a_pages_url_gets_the_uis_page(browser: httpx.Client, path: str) -> None:
    resp = browser.get(path)
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("text/html"), resp.text[:200]
    assert alert(resp.text).startswith("The URL holds a NUL character (%00), which no name or id contains.")


def test_a_wrong_token_is_a_fixed_sentence_and_the_url_cannot_say_another(browser: httpx.Client) -> None:
    wrong = browser.post("/ui/login", data={"token": "orch_wrong", "next": "/ui/runs"}, headers=OWN)
    assert wrong.status_code == 303
    shown = browser.get(wrong.headers["location"])
    assert alert(shown.text).startswith("The API token is not valid.")
    assert 'name="next" value="/ui/runs"' in shown.text
    spoof = "Your token expired. Get a new one at http://evil.example/orch"
    page = browser.get("/ui/login", params={"error": spoof})
    assert "evil.example" not in page.text and alert(page.text) == ""


def test_a_revoked_token_signs_out_and_says_why(app: FastAPI, api: httpx.Client) -> None:
    made = api.post("/v1/tokens", json={"name": "laptop"}).json()
    with client_of(app, "unused") as client:
        client.headers.pop("Authorization")
        client.cookies.set("orch_token", made["token"])
        assert client.get("/ui/settings").status_code == 200
        assert api.delete(f"/v1/tokens/{made['id']}").status_code in (200, 204)
        gone = client.get("/ui/settings")
        assert gone.status_code == 303
        assert 'orch_token=""' in gone.headers["set-cookie"]  # the dead cookie goes
        query = parse_qs(urlsplit(gone.headers["location"]).query)
        assert query == {"next": ["/ui/settings"], "error": ["signed-out"]}
        said = alert(client.get(gone.headers["location"]).text)
        assert said.startswith("Your token is no longer valid (revoked or unknown); sign in with another.")
    # Never signed in: the sign-in page says nothing is wrong.
    with client_of(app, "unused") as client:
        client.headers.pop("Authorization")
        first = client.get("/ui/settings")
        assert "error" not in first.headers["location"]


# ---- headers ----------------------------------------------------------------------------------


def test_pages_may_not_be_framed_sniffed_or_kept(browser: httpx.Client, api: httpx.Client) -> None:
    for path in ("/ui/settings", "/ui/login", "/ui/runs", "/ui/nope"):
        resp = browser.get(path)
        assert resp.headers["x-frame-options"] == "DENY", path
        csp = resp.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "script-src 'self'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "same-origin"
        assert resp.headers["cache-control"] == "no-store", path  # Back after sign-out shows no page
    # The API's answers too, without the pages' script policy (/docs has its own:
    # tests/api/test_api_docs.py).
    for resp in (api.get("/v1/environments"), browser.get("/ui/static/app.js")):
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "no-store" not in resp.headers.get("cache-control", "")


def test_the_pages_have_no_inline_script_or_style(browser: httpx.Client, api: httpx.Client) -> None:
    """What the pages' policy (script-src and style-src 'self') would block."""
    for path in ("/ui/settings", "/ui/login", "/ui/environments", "/ui/environments/new", "/ui/runs"):
        html = browser.get(path).text
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], path
        assert " style=" not in html and "<style" not in html and " on" + "click=" not in html, path


def test_services_answers_keep_their_own_headers(site: httpx.Client) -> None:
    resp = site.get("/services/default/nothing/")
    assert "x-frame-options" not in resp.headers and "content-security-policy" not in resp.headers


# ---- what a page says from its URL ------------------------------------------------------------


def test_an_unknown_ui_path_is_the_uis_error_page(browser: httpx.Client, api: httpx.Client) -> None:
    page = browser.get("/ui/nope")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert alert(page.text) == "There is no page at this address."
    assert 'aria-label="Main"' in page.text and "Choose a page from the menu above." in page.text
    assert browser.get("/ui/runs?before=").status_code == 200
    assert browser.get("/ui/agents/hello/x").status_code == 404  # no such page: the UI's page too
    assert "text/html" in browser.get("/ui/agents/hello/x").headers["content-type"]
    # Elsewhere the API's JSON, as before.
    assert api.get("/v1/nope").json()["message"] == "Nothing is at /v1/nope."


def test_a_static_address_with_no_file_says_nothing_a_link_chose(browser: httpx.Client) -> None:
    # It answered the API's JSON, "Nothing is at /ui/static/x. Your token expired; ..." (found
    # by a tester): a plain sentence of its own, never the address.
    said = "x. Your token expired; sign in at evil.example."
    for resp in (browser.get("/ui/static/" + said), browser.post("/ui/static/" + said, headers=OWN)):
        assert resp.status_code in (404, 405) and resp.headers["content-type"].startswith("text/plain")
        assert "evil.example" not in resp.text and "expired" not in resp.text
    assert browser.get("/ui/static/nope.js").text == "There is no file at this address."
    assert browser.get("/ui/static/app.js").status_code == 200


@pytest.mark.parametrize("path", ["/ui/x%00y", "/ui/environments%00", "/ui/%00"])
def test_a_nul_in_an_address_that_is_no_page_is_refused(browser: httpx.Client, path: str) -> None:
    resp = browser.get(path)  # was 404, with the NUL itself in the page's HTML
    assert resp.status_code == 400 and "\x00" not in resp.text
    assert alert(resp.text).startswith("The URL holds a NUL character (%00), which no name or id contains.")


def test_the_error_page_says_nothing_a_link_chose(browser: httpx.Client) -> None:
    said = "Your token was revoked. Sign in at http://evil.example"
    page = browser.get("/ui/" + said)
    assert page.status_code == 404 and "evil.example" not in page.text and "revoked" not in page.text


@pytest.mark.parametrize("kind", ["agents", "runs", "environments", "services"])
def test_a_pages_name_that_is_no_name_says_nothing_a_link_chose(browser: httpx.Client, kind: str) -> None:
    # "No agent 'x. Session expired: sign in at evil.example' in this workspace." was shown.
    page = browser.get(f"/ui/{kind}/x. Session expired: sign in at evil.example")
    assert page.status_code == 404 and alert(page.text) == "There is no page at this address."
    assert "evil.example" not in page.text and "expired" not in page.text
    # A name (or id) that is none of the workspace's still says which.
    assert "&#39;nothere&#39; in this workspace." in alert(browser.get(f"/ui/{kind}/nothere").text)


def test_a_form_with_bytes_that_are_not_utf8_saves_nothing(browser: httpx.Client, api: httpx.Client) -> None:
    # The form parser read %FF as U+FFFD, and the secret was saved with a value not the one sent
    # (the CLI and the API refuse it; found by a tester).
    resp = browser.post(
        "/ui/settings/secrets",
        content=b"name=UIS5&value=%ff%fe&workspace=" + mine(browser)["workspace"].encode(),
        headers={**OWN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 303, resp.text[:300]
    page = browser.get(resp.headers["location"])
    assert alert(page.text).startswith("The form holds bytes that are not UTF-8 text, so nothing was saved.")
    assert api.get("/v1/secrets").json() == []
    # UTF-8 text, escaped, is saved as sent.
    browser.post(
        "/ui/settings/secrets", data={"name": "UIS6", "value": "héllo", **mine(browser)}, headers=OWN
    )
    assert [s["name"] for s in api.get("/v1/secrets").json()] == ["UIS6"]


def test_a_secret_named_in_the_url_is_shown_only_if_it_is_one(browser: httpx.Client) -> None:
    spoof = browser.get("/ui/settings", params={"secret": "ADMIN_PASSWORD is hunter2. Also", "done": "set"})
    assert "hunter2" not in spoof.text and 'role="status"' not in spoof.text
    # A secret's name that the list does not back: not shown either.
    assert 'role="status"' not in browser.get("/ui/settings?secret=NOT_SAVED&done=set").text
    saved = browser.post(
        "/ui/settings/secrets", data={"name": "API_KEY", "value": "v", **mine(browser)}, headers=OWN
    )
    assert "Secret API_KEY saved." in browser.get(saved.headers["location"]).text
    deleted = browser.post("/ui/settings/secrets/API_KEY/delete", data=mine(browser), headers=OWN)
    assert "Secret API_KEY deleted." in browser.get(deleted.headers["location"]).text


def test_a_failed_default_goes_back_to_settings_with_its_sentence(
    browser: httpx.Client, api: httpx.Client, platform: Platform
) -> None:
    api.post("/v1/environments", json={"name": "broken", "dockerfile": FAILING})
    drain(platform)
    env = api.get("/v1/environments/broken").json()
    assert env["status"] == "failed"
    resp = browser.post(
        "/ui/settings/default-environment", data={"environment": env["id"], **mine(browser)}, headers=OWN
    )
    assert resp.status_code == 303  # a reload shows Settings again; it does not send the form again
    target = urlsplit(resp.headers["location"])
    assert (target.path, target.fragment) == ("/ui/settings", "default-heading")
    page = browser.get(resp.headers["location"])
    assert alert(page.text).startswith("broken can&#39;t be the workspace default: its build failed")
    assert 'id="default-environment"' in page.text  # the form, again
    # The sentence travels sealed: a changed or made-up one shows nothing.
    sealed = parse_qs(target.query)["failed"][0]
    for forged in (sealed[:-4] + "AAAA", "v1:aGVsbG8=", "The server was hacked."):
        assert alert(browser.get("/ui/settings", params={"failed": forged}).text) == ""


def test_a_sandbox_removed_already_says_so(browser: httpx.Client, api: httpx.Client, holder) -> None:
    sandbox = create(api)
    first = browser.post(f"/ui/sandboxes/{sandbox['id']}/remove", data=mine(browser), headers=OWN)
    assert "Removed " + sandbox["id"] in browser.get(first.headers["location"]).text
    again = browser.post(f"/ui/sandboxes/{sandbox['id']}/remove", data=mine(browser), headers=OWN)
    page = browser.get(again.headers["location"]).text
    assert f"{sandbox['id']} was already removed (removed on request); nothing to remove." in page
    assert "Removed " + sandbox["id"] not in page
    # The note comes from the record: a link can't make it say so of a running sandbox, one that
    # never was, or another workspace's (it said "Removed <any id>.").
    running = create(api)
    for shown in (running["id"], "sbx_neverexisted"):
        assert "Removed " + shown not in browser.get("/ui/sandboxes", params={"removed": shown}).text
    unknown = browser.post("/ui/sandboxes/sbx_nothere00/remove", data=mine(browser), headers=OWN)
    assert alert(browser.get(unknown.headers["location"]).text).startswith(
        "No sandbox &#39;sbx_nothere00&#39; in this workspace."
    )


# ---- runs -------------------------------------------------------------------------------------


@pytest.fixture
def hello(api: httpx.Client, tmp_path: Path) -> str:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    return "hello"


def test_runs_lists_say_how_many_they_show_and_link_to_older(
    browser: httpx.Client, api: httpx.Client, hello: str
) -> None:
    ids = [api.post("/v1/runs", json={"agent": hello}).json()["id"] for _ in range(22)]
    agent_page = browser.get("/ui/agents/hello").text
    assert agent_page.count('href="/ui/runs/run_') == 20
    assert "Showing 20 runs; there are older ones." in agent_page
    [last] = re.findall(r'href="\?before=(run_\w+)"', agent_page)
    older = browser.get(f"/ui/agents/hello?before={last}").text
    # The page after: the two oldest, none of the first page again, every run on one page.
    assert older.count('href="/ui/runs/run_') == 2 and "These are the oldest runs." in older
    shown = re.findall(r'href="/ui/runs/(run_\w+)"', agent_page + older)
    assert sorted(shown) == sorted(ids) and 'href="?">Newest runs' in older
    assert "Showing all 22 runs." in browser.get("/ui/runs").text
    assert browser.get("/ui/runs?before=run_nothere00").status_code == 404


@pytest.mark.parametrize("page", ["/ui/runs", "/ui/agents/hello"])
def test_a_before_that_is_no_run_id_says_nothing_a_link_chose(
    browser: httpx.Client, hello: str, page: str
) -> None:
    # "No run 'x. Session expired: re-enter token at evil.example/login' in this workspace."
    # was shown (found by a tester): a value that is not a run's id gets a fixed sentence.
    said = "x. Session expired: re-enter token at evil.example/login"
    resp = browser.get(page, params={"before": said})
    assert resp.status_code == 404 and alert(resp.text) == "There is no page at this address."
    assert "evil.example" not in resp.text and "expired" not in resp.text
    # A run's id that is not one of this workspace's still says which.
    missing = browser.get(page, params={"before": "run_nothere00"})
    assert alert(missing.text) == "No run &#39;run_nothere00&#39; in this workspace."


def test_a_run_can_be_cancelled_from_its_page(browser: httpx.Client, api: httpx.Client, hello: str) -> None:
    run_id = api.post("/v1/runs", json={"agent": hello}).json()["id"]  # stays queued: no workers
    page = browser.get(f"/ui/runs/{run_id}").text
    assert f'action="/ui/runs/{run_id}/cancel"' in page
    refused = browser.post(f"/ui/runs/{run_id}/cancel", data=mine(browser), headers=SERVICES_PAGE)
    assert refused.status_code == 403 and api.get(f"/v1/runs/{run_id}").json()["status"] == "queued"
    done = browser.post(f"/ui/runs/{run_id}/cancel", data=mine(browser), headers=OWN)
    assert done.status_code == 303 and done.headers["location"] == f"/ui/runs/{run_id}"
    assert api.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"
    assert "/cancel" not in browser.get(f"/ui/runs/{run_id}").text  # ended: no button
    again = browser.post(f"/ui/runs/{run_id}/cancel", data=mine(browser), headers=OWN)
    assert alert(browser.get(again.headers["location"]).text).startswith(f"Run {run_id} has already ended")


def test_a_transcript_shows_arguments_and_output_as_read(
    browser: httpx.Client, api: httpx.Client, platform: Platform, hello: str
) -> None:
    run_id = api.post("/v1/runs", json={"agent": hello}).json()["id"]
    command = "echo '<script>' \x1b[31mRED\x1b[0m é"
    run_events.append(
        platform, run_id, "tool_call", {"call_id": "c1", "name": "bash", "arguments": {"command": command}}
    )
    run_events.append(
        platform,
        run_id,
        "tool_result",
        {"call_id": "c1", "name": "bash", "exit_code": 0, "output": "\x1b[1mbold\x1b[0m\n"},
    )
    two = {"path": "notes/<b>é.md", "content": "<b>"}
    run_events.append(
        platform, run_id, "tool_call", {"call_id": "c2", "name": "write_file", "arguments": two}
    )
    page = browser.get(f"/ui/runs/{run_id}").text
    assert "<code>echo &#39;&lt;script&gt;&#39; RED é</code>" in page  # the command itself, escaped once
    assert '<pre class="log">bold\n</pre>' in page
    assert "<code>notes/&lt;b&gt;é.md (3 bytes)</code>" in page  # as `orch runs events` says it
    assert "\\u00" not in page and "\x1b" not in page


# ---- other pages ------------------------------------------------------------------------------


def test_a_loop_agents_page_says_what_it_runs(
    browser: httpx.Client, api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    allow(platform, "http://127.0.0.1:11434/v1")
    manifest = "loop:\n  model: qwen2.5:7b\n  provider: openai\n  base_url: http://127.0.0.1:11434/v1\n"
    assert publish(api, "looper", bundle(tmp_path, {"orch.yaml": manifest})).status_code == 201
    page = browser.get("/ui/agents/looper").text
    shown = re.search(r'<dd id="entrypoint">(.*?)</dd>', page, re.S)
    assert shown and "a managed loop: model <code>qwen2.5:7b</code> from openai" in shown.group(1)
    assert "managed loop (qwen2.5:7b, openai)" in browser.get("/ui/agents").text


def test_a_ready_environment_shows_no_empty_failure_rows(browser: httpx.Client) -> None:
    page = browser.get("/ui/environments/python").text
    assert re.search(r'<dt data-row="error" hidden>Error</dt>', page)
    assert re.search(r'<dt data-row="excerpt" hidden>Why it failed</dt>', page)
    assert '<link rel="icon" href="/ui/static/favicon.svg"' in page
    assert browser.get("/ui/static/favicon.svg").status_code == 200


def test_the_new_environment_names_pattern_is_valid_under_the_v_flag(browser: httpx.Client) -> None:
    """Browsers compile `pattern` with the `v` flag, where a bare `-` in a class is an error
    (and the field is then never checked): every pattern escapes it. tests/e2e checks in Chromium."""
    for path in ("/ui/environments/new", "/ui/settings"):
        for pattern in re.findall(r'pattern="([^"]*)"', browser.get(path).text):
            assert not re.search(r"[^\\]-\]", pattern), pattern


# ---- forms of a page rendered for another workspace -------------------------------------------


@pytest.mark.parametrize(
    ("path", "data", "back"),
    [
        ("/ui/settings/secrets/API_KEY/delete", {}, "/ui/settings"),
        ("/ui/settings/secrets", {"name": "API_KEY", "value": "replaced"}, "/ui/settings"),
        ("/ui/settings/default-environment", {"environment": ""}, "/ui/settings"),
        ("/ui/runs/run_nothere00/cancel", {}, "/ui/runs/run_nothere00"),
        ("/ui/sandboxes/sbx_nothere00/remove", {}, "/ui/sandboxes"),
    ],
)
def test_a_form_of_a_page_for_another_workspace_changes_nothing(
    browser: httpx.Client, api: httpx.Client, other_token: str, path: str, data: dict[str, str], back: str
) -> None:
    """Found by a tester: tab 1 showed Settings of workspace team; tab 2 signed in to another
    (the cookie is shared); Delete next to API_KEY in tab 1 deleted the OTHER workspace's
    API_KEY, silently. A form says which workspace its page was for; another one is refused.
    Then (found by a tester) the refusal was a page at the form's URL saying "Reload the page.":
    the reload sent the form again, which deleted the secret once tab 2 signed in back to team.
    It goes back to the form's page (post/redirect/get), as any form that fails."""
    other = httpx.Client(
        transport=api._transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {other_token}"},
    )
    for client in (api, other):
        assert client.put("/v1/secrets/API_KEY", json={"value": "kept"}).status_code == 200
    rendered_for = mine(browser)  # tab 1's page, for team
    browser.cookies.set("orch_token", other_token)  # tab 2 signs in to beta
    for sent in (rendered_for, {}):  # the page's field, or none at all
        resp = browser.post(path, data={**data, **sent}, headers=OWN)
        assert resp.status_code == 303, resp.text[:300]  # a reload gets the page, not the form again
        assert urlsplit(resp.headers["location"]).path == back
        shown = browser.get(resp.headers["location"]).text
        said = "This page was for workspace team" if sent else "This page was for another workspace"
        assert alert(shown) == (
            f"{said}; you are now signed in to workspace beta, so nothing was changed. "
            "This page now shows workspace beta; to change "
            + ("workspace team" if sent else "the other workspace")
            + ", sign in to it again."
        )
        assert "Reload the page." not in shown
    for client in (api, other):
        assert [s["name"] for s in client.get("/v1/secrets").json()] == ["API_KEY"]
    # What a page's script asks before a change it makes through the API (Run, Restart, ...).
    now = browser.get("/ui/workspace").json()
    assert now["name"] == "beta" and now["id"] != rendered_for["workspace"]
    assert f'data-workspace="{now["id"]}"' in browser.get("/ui/settings").text
    browser.cookies.clear()
    assert browser.get("/ui/workspace").status_code == 401
    browser.cookies.set("orch_token", other_token)
    [kept] = other.get("/v1/secrets").json()
    assert kept["updated_at"] == kept["created_at"]  # not replaced either
    # Reloaded, the page is beta's, and its forms act on beta.
    deleted = browser.post("/ui/settings/secrets/API_KEY/delete", data=mine(browser), headers=OWN)
    assert deleted.status_code == 303 and other.get("/v1/secrets").json() == []
    assert [s["name"] for s in api.get("/v1/secrets").json()] == ["API_KEY"]


def test_a_plain_tokens_form_names_no_other_workspace_whatever_id_it_sends(
    browser: httpx.Client, api: httpx.Client, platform: Platform
) -> None:
    """Found by a tester: a plain token's browser posting another workspace's id in the form's
    field was told its name ("This page was for workspace beta"), and "another workspace" for a
    made-up id: an id-to-name oracle. Only a token that may see the other workspace (an admin's)
    has it named; for a plain one an existing and a missing id read the same."""
    team_id = mine(browser)["workspace"]
    beta = api.post("/v1/workspaces", json={"name": "beta"}).json()  # its first token: a plain one
    browser.cookies.set("orch_token", beta["token"])
    for sent in (team_id, "ws_zzzzzzzzzz"):
        resp = browser.post("/ui/runs/run_nothere00/cancel", data={"workspace": sent}, headers=OWN)
        assert resp.status_code == 303, resp.text[:300]
        shown = browser.get(resp.headers["location"]).text
        assert alert(shown).startswith(
            "This page was for another workspace; you are now signed in to workspace beta, so nothing "
            "was changed."
        )
        assert "team" not in shown
    browser.cookies.set("orch_token", api.headers["Authorization"].removeprefix("Bearer "))  # team's admin
    resp = browser.post("/ui/runs/run_nothere00/cancel", data={"workspace": beta["id"]}, headers=OWN)
    assert alert(browser.get(resp.headers["location"]).text).startswith(
        "This page was for workspace beta; you are now signed in to workspace team"
    )


def test_a_short_runs_duration_reads_as_the_cli_says_it(
    browser: httpx.Client, api: httpx.Client, platform: Platform, hello: str
) -> None:
    """Found by a tester: a 41 ms run's page said "Duration 0.0 s" where `orch runs show` said
    "41 ms"; the pages say a duration as the CLI does."""
    from datetime import timedelta

    from orch.store.schema import RunRow

    fast, slow = (api.post("/v1/runs", json={"agent": hello}).json()["id"] for _ in range(2))
    with platform.store.session() as s:
        for run_id, took in ((fast, 0.041), (slow, 1.74)):
            row = s.get(RunRow, run_id)
            assert row is not None
            row.status = "succeeded"
            row.finished_at = row.queued_at + timedelta(seconds=took)
            row.started_at = row.queued_at
    assert re.search(r'data-field="duration">41 ms<', browser.get(f"/ui/runs/{fast}").text)
    assert re.search(r'data-field="duration">1.7 s<', browser.get(f"/ui/runs/{slow}").text)
    listed = browser.get("/ui/runs").text
    assert "<td>41 ms</td>" in listed and "<td>1.7 s</td>" in listed and "0.0 s" not in listed
