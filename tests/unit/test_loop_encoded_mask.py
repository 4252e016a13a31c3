"""No encoded form of a secret reaches a reason or a tool's answer: a redirect's Location is
shown as the endpoint wrote it (made absolute as text, nothing re-encoded), and a value in it is
masked as it stands and percent-decoded (`Mask.url`); a tool's answer quotes the model's own
words (a path) masked and within WORD_SHOWN characters, however long the path."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from orch.loop.clip import Clip
from orch.loop.model import WORD_SHOWN, ToolCall
from orch.loop.sandbox import Finished
from orch.loop.tools import EDIT_LIMIT, NOT_REGULAR, Tools
from orch.models import RunStatus
from orch.secret.mask import Mask, redact
from tests.model_server import KEY, Fail, ModelServer, model_server_fixture  # noqa: F401 - fixture
from tests.unit.test_loop_driver import PROVIDERS, Drive, LocalSandbox

SECRET = "s3cret VALUE+é%41/x=y"  # a space, a `+`, not ASCII, a `%` that reads as an escape
KEY_ODD = KEY + " with spaces+plus%2F/="  # an API key the same way (ASCII: it goes in a header)


@pytest.fixture(params=PROVIDERS)
def drive(request: pytest.FixtureRequest, model_server: ModelServer, tmp_path: Path) -> Drive:
    return Drive(model_server, request.param, LocalSandbox(tmp_path))


def forms(value: str) -> list[str]:
    """The ways a URL may hold `value`: as it is, percent-encoded (either case of hex, with `+`
    for a space or not, `/` kept or not)."""
    encoded = [quote(value, safe=""), quote(value, safe="/"), quote_plus(value), quote_plus(value, safe="/")]
    return [value, *encoded, *(re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), e) for e in encoded)]


def leaked(value: str, stored: str) -> list[str]:
    """Every run of 8 characters of any form of `value` that `stored` holds."""
    return [f[i : i + 8] for f in forms(value) for i in range(len(f) - 7) if f[i : i + 8] in stored]


def locations(value: str) -> list[str]:
    """Locations that hold `value`: each form in a query, and as it is (its space, its `%`: the
    absolutizing step used to encode them) in a relative path. A header holds no `é`: it is
    encoded there."""
    raw = value.replace("é", quote("é"))
    return [f"/x?k={f}&next=1" for f in forms(value)[1:]] + [f"/x?k={raw}", f"/x/{raw}/y", f"x?k={raw}"]


@pytest.mark.parametrize("where", range(len(locations(SECRET))))
def test_a_secret_a_redirect_holds_percent_encoded_stays_masked(drive: Drive, where: int) -> None:
    location = locations(SECRET)[where]
    drive.server.forever(Fail(307, "moved", {"Location": location}))
    outcome = drive(mask=Mask([SECRET]))
    assert outcome.status == RunStatus.FAILED
    reason = outcome.reason or ""
    assert leaked(SECRET, reason + json.dumps(drive.events, ensure_ascii=False)) == [], reason
    assert f"a redirect to {drive.server.url}/" in reason, reason
    assert "***" in reason


@pytest.mark.parametrize("where", range(len(locations(KEY_ODD))))
def test_the_api_key_a_redirect_holds_percent_encoded_stays_masked(drive: Drive, where: int) -> None:
    drive.server.key = KEY_ODD
    drive.server.forever(Fail(302, "moved", {"Location": locations(KEY_ODD)[where]}))
    outcome = drive(key=KEY_ODD, mask=Mask([KEY_ODD]))
    reason = outcome.reason or ""
    assert outcome.status == RunStatus.FAILED
    assert leaked(KEY_ODD, reason) == [], reason
    assert "***" in reason


def test_a_secret_in_a_redirects_host_is_masked_as_the_endpoint_wrote_it(drive: Drive) -> None:
    value = "Tenant-ABC123-Secret"  # the absolutizing step used to lower its case
    drive.server.forever(Fail(301, "moved", {"Location": f"https://{value}.example/v1"}))
    outcome = drive(mask=Mask([value]))
    assert (outcome.reason or "").startswith(
        "the model endpoint answered 301, a redirect to https://***.example/v1, which orch does not follow"
    ), outcome.reason


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("/x?k=a b", "http://h:1/x?k=a b"),
        ("//Other.Host/p q", "http://Other.Host/p q"),
        ("next é", "http://h:1/v1/next é"),
        ("?q=1", "http://h:1/v1/chat?q=1"),
        ("#top", "http://h:1/v1/chat?a=b#top"),
        ("HTTPS://Elsewhere/a/../b", "HTTPS://Elsewhere/a/../b"),
    ],
)
def test_a_location_is_made_absolute_as_text(location: str, shown: str) -> None:
    from orch.loop.client import absolute

    assert absolute("http://h:1/v1/chat?a=b", location) == shown


def test_the_url_masker_leaves_a_url_without_a_value_as_it_came() -> None:
    url = "https://h.example/a%20b?c=d+e&f=%zz%4"
    assert Mask(["other"]).url(url) == url
    assert Mask(["d e"]).url(url) == "https://h.example/a%20b?c=***&f=%zz%4"
    assert Mask(["a b", "d+e"]).url(url) == "https://h.example/***?c=***&f=%zz%4"


def test_stretches_are_where_redact_masks() -> None:
    from orch.secret.mask import stretches

    rng = random.Random(7)
    for _ in range(300):
        values = [bytes(rng.choices(b"ab*", k=rng.randint(1, 5))) for _ in range(rng.randint(1, 3))]
        data = bytes(rng.choices(b"ab*", k=rng.randint(0, 40)))
        out, done = bytearray(), 0
        for start, end in stretches(data, values):
            out += data[done:start] + b"***"
            done = end
        assert bytes(out + data[done:]) == redact(data, values), (data, values)


class FakeFiles:
    """A ToolSandbox whose file reads exit `code` with `output`, and whose writes succeed: a path
    as long as the model likes (the kernel would refuse one over 4 KiB before any tool said it)."""

    def __init__(self, code: int, output: bytes = b"") -> None:
        self.code, self.output = code, output

    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        if "write_file" in argv:
            return Finished(0, output)
        output(self.output)
        return Finished(self.code, output)


HOSTILE = "d/" * 50_000 + "f"  # 100 KiB


@pytest.mark.parametrize(
    ("tool", "arguments", "sandbox"),
    [
        ("read_file", {"path": HOSTILE}, FakeFiles(NOT_REGULAR)),
        ("edit_file", {"path": HOSTILE, "old": "a", "new": "b"}, FakeFiles(NOT_REGULAR)),
        ("edit_file", {"path": HOSTILE, "old": "a", "new": "b"}, FakeFiles(0, b"x" * (EDIT_LIMIT + 1))),
        ("edit_file", {"path": HOSTILE, "old": "a", "new": "b"}, FakeFiles(0, b"\xff")),
        ("edit_file", {"path": HOSTILE, "old": "a", "new": "b"}, FakeFiles(0, b"no match")),
        ("edit_file", {"path": HOSTILE, "old": "a", "new": "b"}, FakeFiles(0, b"a once")),
        ("write_file", {"path": HOSTILE, "content": "x"}, FakeFiles(0)),
    ],
)
def test_a_hostile_path_is_quoted_within_its_bound(
    tool: str, arguments: dict[str, str], sandbox: FakeFiles
) -> None:
    tools = Tools(sandbox, 5.0, 10_000, Mask())  # type: ignore[arg-type]
    outcome = tools.run(ToolCall("c1", tool, json.dumps(arguments)), (tool,))
    assert "d/d/d/d/" in outcome.output
    assert len(outcome.output) < WORD_SHOWN + 150, outcome.output[:300]


@pytest.mark.parametrize("at", [90, 93, 95, 96, 97, 98, 99])
def test_a_secret_in_a_path_at_the_cut_stays_masked(at: int) -> None:
    value = "s3cret-VALUE-0123456789"
    tools = Tools(FakeFiles(NOT_REGULAR), 5.0, 10_000, Mask([value]))  # type: ignore[arg-type]
    path = "p" * at + value + "q" * 50
    outcome = tools.run(ToolCall("c1", "read_file", json.dumps({"path": path})), ("read_file",))
    assert outcome.output.startswith("error: ppp")
    shown = outcome.output.removeprefix("error: ").partition(" is not a regular file")[0]
    assert shown.endswith("...") and len(shown) <= WORD_SHOWN, shown  # masked, then cut
    assert [value[i : i + 8] for i in range(len(value) - 7) if value[i : i + 8] in outcome.output] == []


def test_a_long_path_the_kernel_takes_is_quoted_cut(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    path = "." + "/" * 4000 + "dir"  # a directory, under PATH_MAX
    tools = Tools(LocalSandbox(tmp_path), 5.0, 10_000, Mask())  # type: ignore[arg-type]
    outcome = tools.run(ToolCall("c1", "read_file", json.dumps({"path": path})), ("read_file",))
    assert outcome.exit_code == 1
    assert "is not a regular file" in outcome.output
    assert len(outcome.output) < WORD_SHOWN + 150, outcome.output[:300]
