"""The API key and the run's secrets stay masked where a reason quotes the endpoint's own text
(its error message, a redirect's Location) within a limit: masked first, then cut, so a value
the cut goes through is hidden whole, never its first characters (found by a tester)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orch.loop.model import ToolCall
from orch.loop.tools import Tools
from orch.models import RunStatus
from orch.secret.mask import Mask
from tests.model_server import KEY, Fail, ModelServer, model_server_fixture  # noqa: F401 - fixture
from tests.unit.test_loop_driver import PROVIDERS, Drive, LocalSandbox

SECRET = "s3cret-VALUE-0123456789"
OFFSETS = [300, 475, 485, 493, 496, 497, 498, 499]  # where the value starts


@pytest.fixture(params=PROVIDERS)
def drive(request: pytest.FixtureRequest, model_server: ModelServer, tmp_path: Path) -> Drive:
    return Drive(model_server, request.param, LocalSandbox(tmp_path))


def leaked(value: str, stored: str) -> list[str]:
    """Every run of 8 characters of `value` that `stored` holds."""
    return [value[i : i + 8] for i in range(len(value) - 7) if value[i : i + 8] in stored]


def check(drive: Drive, value: str, outcome_reason: str | None) -> None:
    assert outcome_reason is not None
    stored = outcome_reason + json.dumps(drive.events, ensure_ascii=False)
    assert leaked(value, stored) == [], outcome_reason[-120:]


@pytest.mark.parametrize("status", [400, 401, 403, 429, 500])
@pytest.mark.parametrize("at", OFFSETS)
@pytest.mark.parametrize("value", [KEY + "-0123456789abcdef", SECRET])
def test_a_value_the_endpoints_message_quotes_at_the_cut_stays_masked(
    drive: Drive, status: int, at: int, value: str
) -> None:
    key = KEY + "-0123456789abcdef"
    drive.server.key = key
    drive.server.forever(Fail(status, "x" * at + value + " tail"))
    outcome = drive(key=key, mask=Mask([key, SECRET]))
    assert outcome.status == RunStatus.FAILED
    check(drive, value, outcome.reason)
    assert "x" * 300 in (outcome.reason or "")  # the message is still quoted


@pytest.mark.parametrize("at", OFFSETS)
def test_a_value_a_redirects_location_holds_at_the_cut_stays_masked(drive: Drive, at: int) -> None:
    location = "http://evil.example/" + "a" * (at - len("http://evil.example/")) + SECRET
    drive.server.forever(Fail(307, "moved", {"Location": location}))
    outcome = drive(mask=Mask([SECRET]))
    assert outcome.status == RunStatus.FAILED
    check(drive, SECRET, outcome.reason)
    assert "http://evil.example/aaaa" in (outcome.reason or "")
    assert (outcome.reason or "").endswith("if that address is in the server's model_endpoints")


def test_a_message_whose_spaces_differ_from_a_value_is_masked_before_they_are_joined(drive: Drive) -> None:
    value = "two  words\nand-a-line"
    drive.server.forever(Fail(400, "refused: " + value))
    outcome = drive(mask=Mask([value]))
    assert outcome.reason == "the model endpoint refused the request (400): refused: ***"


@pytest.mark.parametrize("at", [90, 93, 95, 96, 97, 98, 99])
def test_a_value_in_an_unknown_tools_name_at_the_cut_stays_masked(tmp_path: Path, at: int) -> None:
    tools = Tools(LocalSandbox(tmp_path), 5.0, 10_000, Mask([SECRET]))  # type: ignore[arg-type]
    outcome = tools.run(ToolCall("c1", "n" * at + SECRET, "{}"), ("bash",))
    assert leaked(SECRET, outcome.output) == [], outcome.output


@pytest.mark.parametrize("at", [0, 1, 2, 3, 4, 5])
def test_a_cut_never_splits_a_mask(at: int) -> None:
    from orch.secret.mask import shorten

    text = "y" * (7 - 3 - at) + "***" + "z" * 20
    cut = shorten(text, 10)
    assert len(cut) <= 10 and cut.endswith("...")
    assert "*" not in cut or "***" in cut
