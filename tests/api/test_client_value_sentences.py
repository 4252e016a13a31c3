"""Sentences of InvalidInput that fit the value given and the argument it was given as, found by a
tester: numpy's bool called "a bool" (then told to pass booleans), `timeout=30.0` refused as not
a whole number, a numpy int timeout given `input`'s fix, `memory="1Ei"` called no size, and
`events(wait=nan)` sent to the server. numpy is not installed here: `Bool`, `Int64` and `Float32`
behave as its scalars do for this (none is Python's type; `.item()` gives Python's value; its
int has `__index__`), named and placed as numpy's are."""

from __future__ import annotations

from typing import Any

import pytest

from orch import Client
from orch.bundle.resources import Resources
from orch.sandbox.held_fake import FakeHolder
from orch.services.platform import Platform
from tests.api.test_client_input import client, hello, holder, refused
from tests.api.test_sandboxes import rows

__all__ = ["client", "hello", "holder"]


class Bool:
    """numpy.bool: no int (nor bool) of Python's, named "bool"."""

    __module__ = "numpy"

    def __init__(self, value: bool) -> None:
        self.value = value

    def __bool__(self) -> bool:
        return self.value

    def item(self) -> bool:
        return self.value


Bool.__name__ = Bool.__qualname__ = "bool"


class Int64:
    """numpy.int64: not Python's int, but an integer (`__index__`)."""

    __module__ = "numpy"

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def item(self) -> int:
        return self.value


class Float32:
    """numpy.float32: not Python's float."""

    __module__ = "numpy"

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        return self.value

    def item(self) -> float:
        return self.value


Int64.__name__ = Int64.__qualname__ = "int64"
Float32.__name__ = Float32.__qualname__ = "float32"


def test_numpy_s_bool_is_not_called_a_bool(client: Client, holder: FakeHolder, hello: str) -> None:
    e = refused(lambda: client.runs.create(hello, input={"flag": Bool(True)}), "")
    assert e.message == (
        "`input['flag']` is a numpy.bool (True), not Python's own bool, which is what json can send."
    )
    assert e.fix == "Convert it first: .item() (or bool(…)) gives Python's bool."
    e = refused(lambda: client.runs.create(hello, input=[Int64(3)]), "")
    assert e.message.startswith("`input[0]` is a numpy.int64 (3), not Python's own int")
    e = refused(lambda: client.sandboxes.create(network=Bool(True)), "")  # type: ignore[arg-type]
    assert e.message.startswith("`network` is a numpy.bool (True), not Python's own bool")
    e = refused(lambda: client.sandboxes.list(all=Bool(True)), "")  # type: ignore[arg-type]
    assert e.message == "`all` is a numpy.bool, not True or False."
    assert client.runs.list() == []  # nothing was created


@pytest.mark.parametrize("timeout", [30.0, Int64(30), Float32(30.0)], ids=["30.0", "int64", "float32"])
def test_a_timeout_of_whole_seconds_is_taken_whatever_its_type(
    client: Client, holder: FakeHolder, hello: str, platform: Platform, timeout: Any
) -> None:
    """The docs give a timeout in seconds; 30.0 is 30 of them."""
    assert client.runs.get(client.runs.create(hello, timeout=timeout).id).id
    with client.sandboxes.create(timeout=timeout) as box:
        assert box.timeout == 30
        assert box.exec(["echo", "hi"], timeout=timeout).stdout == "hi\n"


@pytest.mark.parametrize(
    ("timeout", "said", "fix"),
    [
        (
            30.5,
            "`timeout` is 30.5 seconds: it takes whole seconds, not a fraction of one.",
            "Pass timeout=31",
        ),
        (float("nan"), "`timeout` is nan, which is no number of seconds.", "such as timeout="),
        (float("inf"), "`timeout` is inf, which is no number of seconds.", "such as timeout="),
        (Bool(True), "`timeout` is a numpy.bool, not a number of seconds.", "such as timeout="),
        ("30", "`timeout` is a str, not a number of seconds.", "such as timeout="),
    ],
)
def test_a_timeout_that_is_no_whole_seconds_is_said_so(
    client: Client, holder: FakeHolder, hello: str, platform: Platform, timeout: Any, said: str, fix: str
) -> None:
    for call in (
        lambda: client.runs.create(hello, timeout=timeout),
        lambda: client.sandboxes.create(timeout=timeout),
    ):
        e = refused(call, said)
        assert e.message == said and fix in e.fix and "input" not in e.fix, e
    assert client.runs.list() == [] and rows(platform) == []


@pytest.mark.parametrize("memory", ["1Ei", "2Pi", "1.5EB", "3z", "9" * 50])
def test_memory_past_the_most_is_too_large_not_no_size(
    client: Client, holder: FakeHolder, platform: Platform, memory: str
) -> None:
    e = refused(
        lambda: client.sandboxes.create(memory=memory), "more than a sandbox may have: at most 64 GiB."
    )
    assert e.fix.startswith("Pass a size up to 64Gi")
    assert rows(platform) == []


def test_the_client_s_most_memory_is_the_server_s() -> None:
    """The 64 GiB the client says (sandboxes.MOST_MEMORY) is the server's bound."""
    from orch.client import sandboxes

    assert sandboxes.MOST_MEMORY_BYTES == 64 * 1024**3
    assert Resources.model_validate({"memory": str(64 * 1024**3)}).memory_bytes == 64 * 1024**3
    with pytest.raises(ValueError, match="more than the maximum of 64 GiB"):
        Resources.model_validate({"memory": str(64 * 1024**3 + 1)})


@pytest.mark.parametrize("memory", ["0Ei", "0.000001Pi", "x", "1Qi"])
def test_memory_the_client_does_not_judge_is_the_server_s(
    client: Client, holder: FakeHolder, memory: str
) -> None:
    """Less than the most (0Ei) or no size at all: the server's sentence, not "too large"."""
    e = refused(lambda: client.sandboxes.create(memory=memory), "")
    assert "more than a sandbox may have" not in e.message
    assert e.message.startswith("memory: "), e


def test_events_wait_nan_or_infinite_is_refused_before_any_request(
    client: Client, holder: FakeHolder, hello: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = client.runs.create(hello)
    sent: list[str] = []
    send = client.http.send
    monkeypatch.setattr(client.http, "send", lambda *a, **k: sent.append(a[1]) or send(*a, **k))
    for wait in (float("nan"), float("inf"), float("-inf")):
        e = refused(lambda: run.events(wait=wait), "")  # noqa: B023
        assert e.message == f"`wait` is {wait}, which is no number of seconds to wait."
        assert e.fix.startswith("Pass wait as the seconds to wait for an event, up to 30")
    e = refused(lambda: run.events(wait=Bool(True)), "")  # type: ignore[arg-type]
    assert e.message == "`wait` is a numpy.bool, which is no number of seconds to wait."
    assert sent == []
    run.events(wait=Int64(1))  # numpy's int is taken: sent, not refused
    assert len(sent) == 1


def test_numpy_s_numbers_are_taken_where_a_number_goes(
    client: Client, holder: FakeHolder, workspace: tuple[str, str], served: tuple[str, str]
) -> None:
    assert len(client.runs.list(limit=Int64(5))) == 0  # type: ignore[arg-type]
    with Client(served[0], workspace[1], timeout=Int64(20)) as other:  # type: ignore[arg-type]
        assert other.http.wait.read == 20.0
    with client.sandboxes.create(cpus=Int64(1)) as box:  # type: ignore[arg-type]
        assert box.cpus == 1.0
