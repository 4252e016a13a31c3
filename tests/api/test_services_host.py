"""Services' default address is on a host name apart from the web UI's, and the UI is not served
under that host name: browsers keep cookies by host name, not by port, so a service's page
could otherwise set cookies the UI reads (cookie tossing, docs/services.md "Their own origin")."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from orch.server.main import shared_host
from orch.services.platform import Platform, default_services_url


def test_the_default_services_url_is_on_another_host_name_than_the_uis(
    platform: Platform, api: httpx.Client
) -> None:
    assert str(platform.config.host) == "127.0.0.1" and not platform.config.services_url
    assert platform.services_url == f"http://localhost:{platform.config.services_port}"
    assert urlsplit(platform.services_url).hostname != "127.0.0.1"
    assert default_services_url("127.0.0.1", 8751) == "http://localhost:8751"
    assert default_services_url("localhost", 8751) == "http://localhost:8751"
    # Other addresses are kept (localhost does not reach them, or the server is reached from
    # elsewhere); the server warns at start that services need a host name of their own.
    assert default_services_url("0.0.0.0", 8751) == "http://0.0.0.0:8751"
    assert default_services_url("192.0.2.7", 8751) == "http://192.0.2.7:8751"
    assert default_services_url("127.0.0.2", 8751) == "http://127.0.0.2:8751"


def test_a_bind_that_shares_the_uis_host_name_is_warned_about() -> None:
    said = shared_host("http://0.0.0.0:8750", "http://0.0.0.0:8751")
    assert said is not None and "ORCH_SERVICES_URL" in said and "host name of their own" in said
    assert shared_host("http://192.0.2.7:8750", "http://192.0.2.7:8751") is not None
    assert shared_host("http://127.0.0.1:8750", "http://127.0.0.1:8751") is not None  # set so by hand
    assert shared_host("http://127.0.0.1:8750", "http://localhost:8751") is None  # the default
    assert shared_host("http://0.0.0.0:8750", "https://services.example.com") is None


def test_the_ui_on_the_services_host_name_sends_its_pages_to_its_own_address(
    served: tuple[str, str], workspace: tuple[str, str], api: httpx.Client
) -> None:
    """`served` listens on 127.0.0.1; the app's services are on localhost (the default)."""
    ui = served[0]
    port = urlsplit(ui).port
    there = f"http://localhost:{port}"
    tossed = {"Cookie": f"orch_token={workspace[1]}"}
    with httpx.Client(timeout=10) as browser:
        for method in ("GET", "HEAD"):
            page = browser.request(method, there + "/ui/settings?secret=A%20B", headers=tossed)
            assert page.status_code == 307, (method, page.text)
            assert page.headers["location"] == f"{ui}/ui/settings?secret=A%20B"
        assert browser.get(there + "/ui", headers=tossed).headers["location"] == f"{ui}/ui"
        # A form posted there is refused with a sentence, and changes nothing.
        form = browser.post(
            there + "/ui/settings/secrets",
            data={"name": "STOLEN", "value": "x"},
            headers={**tossed, "Sec-Fetch-Site": "same-origin"},
        )
        assert form.status_code == 403
        assert form.text.startswith("The web UI is not served on localhost, the services' host name")
        assert f"Open it at {ui}/ui instead." in form.text
        # The API answers there, to tokens only: no cookie counts.
        assert browser.get(there + "/v1/secrets", headers=tossed).status_code == 401
        bearer = {"Authorization": f"Bearer {workspace[1]}"}
        assert browser.get(there + "/v1/secrets", headers=bearer).json() == []
        assert browser.get(there + "/healthz").status_code == 200
        # At the UI's own address, nothing changed: its pages and its cookie.
        assert browser.get(ui + "/v1/secrets", headers=tossed).status_code == 200
        assert browser.get(ui + "/ui/settings", headers=tossed).status_code == 200
    assert api.get("/v1/secrets").json() == []


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "x.localhost"])
def test_every_spelling_of_the_services_host_name_is_sent_away(served: tuple[str, str], host: str) -> None:
    ui = served[0]
    port = urlsplit(ui).port
    with httpx.Client(timeout=10) as browser:
        page = browser.get(ui + "/ui/login", headers={"Host": f"{host}:{port}"})
    assert page.status_code == 307 and page.headers["location"] == f"{ui}/ui/login"
