"""The API key and the run's secrets in the forms a tester found them leaking in: a key no HTTP
header can carry is refused before any request, naming its secret; an error's text that quotes
a value as Python's repr writes it (`b'...\\\\slash'`) is masked; the HTTP library logs nothing of
a run's request to the server's log; a redirect's `+` is read as a space or as itself, each one
its own way; a Retry-After given as an HTTP date is honoured."""

from __future__ import annotations

import email.utils
import logging
import socket
import threading
import time
from pathlib import Path

import httpx2
import pytest

from orch.bundle.loop_manifest import LoopConfig
from orch.errors import RunFailed
from orch.loop.driver import run_loop
from orch.loop.model import retry_after
from orch.loop.outcome import Outcome
from orch.loop.providers import connect
from orch.loop.retry import Backoff
from orch.loop.watch import Watch
from orch.models import RunStatus
from orch.secret.mask import Mask
from tests.model_server import Fail, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture
from tests.unit.test_loop_driver import PROVIDERS, QUICK, Drive, LocalSandbox

BACKSLASH_KEY = "sk-back\\slash-99"  # sendable: visible ASCII
SECRET = 'it\'s-é-"q"\tx'  # a quote of each kind, a tab, what is not ASCII


class RawEndpoint:
    """An endpoint on 127.0.0.1 that answers every request, once read whole, with `answer`'s raw
    bytes and closes the connection: status lines and header lines no HTTP server would send."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> RawEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self._read(conn)
                    self.requests += 1
                    conn.sendall(self.answer)
                except OSError:
                    pass

    @staticmethod
    def _read(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        size = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                size = int(value)
        while len(body) < size:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk


def loop_config(provider: str, url: str) -> LoopConfig:
    return LoopConfig(
        model="test-model",
        provider=provider,  # type: ignore[arg-type]
        base_url=url + "/v1" if provider == "openai" else url,
        api_key_secret="MODEL_KEY",
        system="You are a test.",
    )


def run(provider: str, url: str, key: str, mask: Mask, tmp_path: Path) -> Outcome:
    loop = loop_config(provider, url)
    return run_loop(
        loop, connect(loop, key), LocalSandbox(tmp_path), "hi", lambda *_: None, mask=mask, backoff=QUICK
    )


@pytest.fixture(params=PROVIDERS)
def drive(request: pytest.FixtureRequest, model_server: ModelServer, tmp_path: Path) -> Drive:
    return Drive(model_server, request.param, LocalSandbox(tmp_path))


# F7, F8: a key that no HTTP header can carry


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("sk-twonl-123\n", "it ends with a line break"),
        ("sk-crlf-123\r\n", "it ends with a line break"),
        ("kk-line1\nline2-zz", "it holds a line break"),
        ("kk-cr\rzz", "it holds a line break"),
        ("kk-tab\tzz", "it holds a control character (a tab, say)"),
        ("kk-ключ-zz", "it holds a character that is not ASCII"),
        (" kk-lead", "it begins or ends with a space"),
        ("kk-trail ", "it begins or ends with a space"),
    ],
)
def test_a_key_no_header_can_carry_fails_before_any_request_naming_its_secret(
    drive: Drive, key: str, why: str
) -> None:
    drive.server.key = key
    with pytest.raises(RunFailed) as refused:
        drive(key=key, mask=Mask([key]))
    assert refused.value.message == (
        "The API key in the workspace secret MODEL_KEY (loop.api_key_secret) cannot be sent in an "
        f"HTTP header: {why}."
    )
    assert "orch secret set MODEL_KEY" in refused.value.fix
    assert drive.server.requests == [] and drive.events == []
    said = str(refused.value)
    assert key.strip() not in said and repr(key)[1:-1] not in said


def test_a_key_with_spaces_and_signs_inside_is_sent(drive: Drive) -> None:
    key = "sk-a b+c/=\\'\"~"
    drive.server.key = key
    drive.server.script(Reply(text="fine"))
    outcome = drive(key=key)
    assert (outcome.status, outcome.answer) == (RunStatus.SUCCEEDED, "fine")


# F9: an error's text quotes the answer's bytes as Python's repr writes them


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "answer",
    [
        b"GARBAGE %s\r\n\r\n",  # illegal status line: bytearray(b'GARBAGE ...')
        b"HTTP/1.1 200 OK\r\nthis is not a header %s and more\r\n\r\n",  # illegal header line
    ],
)
def test_an_errors_text_quoting_the_key_or_a_secret_escaped_is_masked(
    tmp_path: Path, provider: str, answer: bytes
) -> None:
    for value in (BACKSLASH_KEY, SECRET):
        with RawEndpoint(answer % value.encode()) as endpoint:
            outcome = run(provider, endpoint.url, BACKSLASH_KEY, Mask([BACKSLASH_KEY, SECRET]), tmp_path)
        reason = outcome.reason or ""
        assert outcome.status == RunStatus.FAILED and reason.startswith("could not reach"), reason
        assert "illegal" in reason and "***" in reason, reason
        for shown in (value, repr(value.encode())[2:-1], "back", "slash", "-é-", "xc3"):
            assert shown not in reason, reason


@pytest.mark.parametrize(
    "value", [BACKSLASH_KEY, SECRET, "sk-twonl-123\n", "a'b", "a\"b'c\\", "kk-ключ-zz", "\x00\x7f\u200b-zero"]
)
def test_each_form_python_quotes_a_value_in_is_masked(value: str) -> None:
    mask = Mask([value])
    for quoted, body in (
        (repr(value), repr(value)[1:-1]),
        (ascii(value), ascii(value)[1:-1]),
        (repr(value.encode()), repr(value.encode())[2:-1]),
        (str(bytearray(value.encode())), str(bytearray(value.encode()))[12:-2]),
        (repr(value + '"'), repr(value + '"')[1:-2]),  # a `'` escaped, as in a text with both quotes
    ):
        said = mask(f"Illegal header value {quoted}, again: {body}")
        assert said == f"Illegal header value {quoted.replace(body, '***')}, again: ***", (quoted, said)


# F6: the server's log


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_http_library_logs_nothing_an_endpoint_wrote_of_a_runs_request(
    tmp_path: Path, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = "zq-Tok3n abc/+=Zz"
    answer = b"HTTP/1.1 999 " + key.encode() + b" \x1b[2J\x1b]0;pwned\x07\r\nContent-Length: 2\r\n\r\n{}"
    caplog.set_level(logging.DEBUG)
    with RawEndpoint(answer) as endpoint:
        outcome = run(provider, endpoint.url, key, Mask([key]), tmp_path)
        assert endpoint.requests == 3
        assert outcome.status == RunStatus.FAILED and "999" in (outcome.reason or "")
        logged = [r.getMessage() for r in caplog.records if r.name.startswith(("httpx2", "httpcore2"))]
        assert logged == []
        assert "zq-Tok3n" not in caplog.text and "\x1b" not in caplog.text
        # Another client of the library logs as it did: only the runs' clients are quiet.
        caplog.clear()
        with httpx2.Client() as other:
            other.post(endpoint.url + "/x", content=b"{}")
        assert any(r.name == "httpx2" and "HTTP Request" in r.getMessage() for r in caplog.records)


# F1: a `+` read as a space or as itself, each one its own way


@pytest.mark.parametrize(
    "location",
    [
        "http://evil.example/x?k=zq-Tok3n+abc/+=Zz",
        "next/zq-Tok3n+abc/+=Zz",
        "/x?k=zq%2DTok3n+abc%2F+%3DZz",
        "/x?k=zq-Tok3n%20abc/+=Zz",
        "/x?k=zq-Tok3n+abc/%2B=Zz",
        "/x?k=zq-Tok3n abc/+=Zz",
    ],
)
def test_a_value_with_a_space_and_a_plus_encoded_differently_is_masked(location: str) -> None:
    shown = Mask(["zq-Tok3n abc/+=Zz"]).url(location)
    assert shown.endswith("***") and "Tok3n" not in shown and "abc" not in shown, shown


def test_a_redirect_writing_the_keys_space_as_a_plus_keeps_the_key_masked(drive: Drive) -> None:
    key = "zq-Tok3n abc/+=Zz"
    drive.server.key = key
    drive.server.forever(Fail(307, "moved", {"Location": "http://evil.example/x?k=" + key.replace(" ", "+")}))
    outcome = drive(key=key, mask=Mask([key]))
    shown = "the model endpoint answered 307, a redirect to http://evil.example/x?k=***, which orch"
    assert (outcome.reason or "").startswith(shown), outcome.reason


def test_a_plus_the_url_holds_beside_no_value_is_kept() -> None:
    assert Mask(["zq-Tok3n abc/+=Zz"]).url("/x?q=a+b+c&k=zq-Tok3n") == "/x?q=a+b+c&k=zq-Tok3n"


# F10: Retry-After as an HTTP date


def test_retry_after_as_an_http_date_is_the_seconds_until_it() -> None:
    now = 4_000_000_000.0
    date = email.utils.formatdate(now + 120, usegmt=True)
    assert retry_after({"retry-after": date}, now) == 120.0
    assert retry_after({"retry-after": email.utils.formatdate(now - 5, usegmt=True)}, now) == 0.0
    assert retry_after({"retry-after": "Sunday, 06-Nov-94 08:49:37 GMT"}, 0.0) == 784111777.0
    assert retry_after({"retry-after": "not a date"}, now) is None
    assert retry_after({"retry-after": "7"}, now) == 7.0


def test_a_retry_after_date_stretches_the_pause_within_the_cap(
    drive: Drive, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(Watch, "sleep", lambda self, seconds: pauses.append(seconds))
    far = email.utils.formatdate(time.time() + 3600, usegmt=True)
    drive.server.script(Fail(429, "slow down", {"Retry-After": far}), Reply(text="fine"))
    loop = LoopConfig(
        model="test-model",
        provider=drive.provider,  # type: ignore[arg-type]
        base_url=drive.server.openai_url if drive.provider == "openai" else drive.server.anthropic_url,
        api_key_secret="MODEL_KEY",
    )
    outcome = run_loop(
        loop,
        connect(loop, drive.server.key),
        drive.sandbox,
        "hi",
        lambda *_: None,
        backoff=Backoff(attempts=3, first=0.01, cap=7.5),
    )
    assert (outcome.status, outcome.answer) == (RunStatus.SUCCEEDED, "fine")
    assert pauses == [7.5]
