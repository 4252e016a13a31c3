"""The services' default address as a real `orch server` says it: on loopback, the host name
localhost, apart from the web UI's 127.0.0.1; on any other address, the UI's host, with one
warning at start (docs/services.md, "Their own origin")."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration]

WARNING = "orch server: warning: services are served on the web UI's host name"


def test_on_loopback_services_get_localhost_and_no_warning(server: Server) -> None:
    assert urlsplit(server.url).hostname == "127.0.0.1"
    assert urlsplit(server.services_url).hostname == "localhost"
    assert urlsplit(server.services_url).port != urlsplit(server.url).port
    assert WARNING not in server.log.read_text()
    with httpx.Client(timeout=10) as client:  # localhost reaches the services' socket
        missing = client.get(server.services_url + "/services/default/none/")
        assert missing.status_code == 401 and "serves orch's services only" not in missing.text
        port = urlsplit(server.url).port
        moved = client.get(f"http://localhost:{port}/ui/settings")
        assert moved.status_code == 307 and moved.headers["location"] == f"{server.url}/ui/settings"


def test_on_every_address_the_server_warns_that_services_share_the_uis_host(
    make_server: Callable[[str], Server],
) -> None:
    server = make_server("all")
    server.settings["ORCH_HOST"] = "0.0.0.0"
    server.start()
    assert urlsplit(server.services_url).hostname == "0.0.0.0" == urlsplit(server.url).hostname
    said = [line for line in server.log.read_text().splitlines() if line.startswith(WARNING)]
    assert len(said) == 1, server.log.read_text()
    assert "ORCH_SERVICES_URL" in said[0] and "host name of their own" in said[0]
