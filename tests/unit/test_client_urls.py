"""A server URL that can't be one is said as such before any request (it was "Cannot reach the
orch server ... Start it with `orch server`", or a crash for `http://[::1`), and an answer that
is not an orch server's (another web server, a proxy) says so with a fix."""

from __future__ import annotations

import httpx
import pytest

from orch.client.transport import Transport
from orch.errors import InvalidInput, OrchError


@pytest.mark.parametrize("url", ["garbage", "ftp://x", "5", "http://[::1"])
def test_a_url_that_is_no_server_s_address_is_bad_input(url: str) -> None:
    with pytest.raises(InvalidInput) as e:
        Transport(url, "orch_t")
    assert e.value.exit_code == 2
    assert e.value.message == f"The server's URL {url!r} is not an http:// or https:// address."
    assert "ORCH_URL" in e.value.fix and "http://127.0.0.1:8750" in e.value.fix


@pytest.mark.parametrize(
    ("url", "said"),
    [
        # Taken as a server's address by urlsplit (it drops the space), never reached by httpx.
        (" http://127.0.0.1:8750", "has a space or a control character in it."),
        ("http://127.0.0.1 :8750", "has a space or a control character in it."),
        ("http://h:99999", "has no valid port (a number from 1 to 65535)."),
        ("http://h:port", "has no valid port (a number from 1 to 65535)."),
        ("http://h:0", "has no valid port (a number from 1 to 65535)."),
        # said as given: "http://" was quoted as 'http:' (stripped of its slashes first)
        ("http://", "names no host."),
        ("http:///path", "names no host."),
        ("http://127.0.0.1:8770?x=1", "has a query (?x=1), which no server's address has."),
        ("http://h/#top", "has a fragment (#top), which no server's address has."),
    ],
)
def test_what_is_wrong_with_a_url_is_said(url: str, said: str) -> None:
    with pytest.raises(InvalidInput) as e:
        Transport(url, "orch_t")
    assert e.value.exit_code == 2
    assert e.value.message == f"The server's URL {url!r} {said}"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8750", "https://orch.example.com", "http://[::1]:8750"])
def test_server_addresses_are_taken(url: str) -> None:
    Transport(url, "orch_t").close()


def test_an_answer_that_is_not_an_orch_server_s_has_a_fix() -> None:
    other = httpx.MockTransport(lambda request: httpx.Response(404, text="<html>Not Found</html>"))
    http = Transport("http://10.255.255.1", "orch_t", transport=other)
    with pytest.raises(OrchError) as e:
        http.get("/v1/environments")
    assert e.value.message.startswith("The server answered 404 Not Found, not as an orch server answers")
    assert "http://10.255.255.1 is the address `orch server` printed" in e.value.fix
    http.close()
