"""server/tokens.py: the one reading of an orch token that the API, the sandbox relay and the
services' proxy share, and what the proxy keeps from the services."""

from __future__ import annotations

import base64

import pytest

from orch.server.tokens import bearer, cookie_holds_token, holds_token

TOKEN = "orch_" + "A1b2-C3d4_" * 4 + "xyz"  # as services/workspaces.py makes them: 43 characters after


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (f"Bearer {TOKEN}", TOKEN),
        (f"bearer {TOKEN}", TOKEN),
        (f"BEARER  {TOKEN} ", TOKEN),
        (f"Bearer\t{TOKEN}", TOKEN),
        (f"  Bearer \t {TOKEN}", TOKEN),
        ("Bearer hook-secret", "hook-secret"),
        ("Bearer", None),
        ("Bearer   ", None),
        (TOKEN, None),
        (f"Basic {TOKEN}", None),
        (f"Bearer{TOKEN}", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_reads_the_scheme_in_any_case_and_any_whitespace(value: str | None, token: str | None) -> None:
    assert bearer(value) == token


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}",
        f"Bearer  {TOKEN}",
        f"bearer\t{TOKEN}",
        f"Bearer {TOKEN[:12]}",  # what the API would read as a token, even a wrong one
        TOKEN,
        f"Token {TOKEN}",
        f"Bearer x,{TOKEN}",
        "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode(),
        "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode(),
        "basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode().rstrip("="),
    ],
)
def test_every_form_of_a_token_is_held(value: str) -> None:
    assert holds_token(value)


@pytest.mark.parametrize(
    "value",
    ["Basic dTpw", "Bearer hook-secret", "Bearer my_orch_secret", "Basic !!!", "Basic", "text/html", ""],
)
def test_a_services_own_credentials_are_not(value: str) -> None:
    assert not holds_token(value)


def test_whatever_the_api_reads_as_an_orch_token_is_held() -> None:
    """The proxy's rule covers the API's reading: no spelling the API takes passes (F8)."""
    for scheme in ("Bearer", "bearer", "BeArEr"):
        for gap in (" ", "  ", "\t", " \t "):
            for tail in ("", " ", "\t"):
                value = f"{scheme}{gap}{TOKEN}{tail}"
                assert bearer(value) == TOKEN and holds_token(value), repr(value)


@pytest.mark.parametrize(
    ("pair", "held"),
    [
        (f"orch_token={TOKEN}", True),
        ("orch_token =x", True),
        (' orch_token="x"', True),
        (f"theirs={TOKEN}", True),
        (f'theirs="{TOKEN}"', True),
        ("mine=1", False),
        ("orch_tokens=1", False),
    ],
)
def test_a_cookie_is_orchs_by_its_name_as_the_api_reads_it_or_by_its_value(pair: str, held: bool) -> None:
    assert cookie_holds_token(pair) is held
