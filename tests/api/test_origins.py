"""The web UI's sign-in cookie acts only for the UI's own pages: a request with effects that a
page of another origin sends with it (a form posted to the API, a fetch without CORS) is refused,
and changes nothing. Services are served on another port, the same site to a browser, so their
pages are such pages."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_ui_pages import mine

SERVICES_PAGE = "http://127.0.0.1:8751"


@pytest.fixture
def browser(api: httpx.Client, workspace: tuple[str, str]) -> httpx.Client:
    """The in-process app as a signed-in browser calls it: the UI's cookie, no Authorization."""
    return httpx.Client(
        transport=api._transport, base_url="http://testserver", cookies={"orch_token": workspace[1]}
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-site", "Origin": SERVICES_PAGE},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Origin": SERVICES_PAGE},  # a browser that sends no Sec-Fetch-Site
    ],
)
def test_another_origins_page_cannot_act_with_the_ui_cookie(
    browser: httpx.Client, api: httpx.Client, headers: dict[str, str]
) -> None:
    resp = browser.put("/v1/secrets/STOLEN", json={"value": "x"}, headers=headers)
    assert resp.status_code == 403
    assert resp.json()["message"].startswith("This request carries the web UI's sign-in cookie")
    assert "Authorization: Bearer" in resp.json()["fix"]
    form = browser.post("/ui/settings/secrets", data={"name": "STOLEN", "value": "x"}, headers=headers)
    assert form.status_code == 403 and "comes from a page of another origin" in form.text
    assert api.get("/v1/secrets").json() == []


def test_the_uis_own_pages_and_tokens_still_act(browser: httpx.Client, api: httpx.Client) -> None:
    own = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    assert browser.put("/v1/secrets/A", json={"value": "x"}, headers=own).status_code == 200
    # An older browser: Origin only, this server's.
    assert (
        browser.put("/v1/secrets/B", json={"value": "x"}, headers={"Origin": "http://testserver"}).status_code
        == 200
    )
    # A tool sending the cookie itself (no page: neither header).
    assert browser.put("/v1/secrets/C", json={"value": "x"}).status_code == 200
    data = {"name": "D", "value": "x", **mine(browser)}  # the page's form names its workspace
    form = browser.post("/ui/settings/secrets", data=data, headers=own)
    assert form.status_code == 303, form.text[:300]
    # Reading with the cookie stays open to any page (a browser keeps the answer from another
    # origin's page), and a token is no ambient credential: it acts from anywhere.
    assert browser.get("/v1/secrets", headers={"Sec-Fetch-Site": "same-site"}).status_code == 200
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": "https://ci.example"}
    assert api.put("/v1/secrets/E", json={"value": "x"}, headers=cross).status_code == 200
    assert [s["name"] for s in api.get("/v1/secrets").json()] == ["A", "B", "C", "D", "E"]
