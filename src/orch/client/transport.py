"""The one HTTP layer of orch's client and CLI: finds the server from the settings, sends the
token, turns error answers into orch's own exceptions (`errors.from_dict`) and a connection that
fails into ServerUnreachable.

It is kept cheap to import and to start, because every CLI command starts with it. An http://
server without a proxy (the local `orch server`) is reached through `plain_http`, over a plain
socket; httpx is imported only for any other (https://, a proxy in the environment, a
transport the caller gives), without httpx's own command line, and then no CA bundle is loaded
for a TLS context that no connection would use. See docs/client.md.
"""

from __future__ import annotations

import builtins
import json
import math
import operator
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from orch import config as config_mod
from orch.client import plain_http
from orch.errors import InvalidInput, OrchError, ServerUnreachable, Unauthorized, from_dict

if TYPE_CHECKING:
    import httpx

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
# Seconds a sandbox's create may take (the CLI's and the client's): the machine that holds it (a
# cluster's node) may pull the environment's image first.
CREATE_TIMEOUT = 300.0
# A long poll (a request with the API's `wait` parameter: a run's logs and events, a service's
# logs) is answered after up to `wait` seconds (at most LONGEST_POLL), and may take POLL_MARGIN
# more, whatever the client's limit for one request: Client(timeout=5) still follows a run.
LONGEST_POLL = 30.0
POLL_MARGIN = 30.0
# The longest limit a client takes for one request (a year, in seconds): a socket's timeout is a
# 64-bit count of nanoseconds (~292 years), and past that it raised a raw OverflowError on every
# call; no request of orch's waits anywhere near this.
LONGEST_TIMEOUT = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Wait:
    """How long a request may take: `connect` to reach the server, `read` for the whole request
    (its sending, the answer's head and body: a deadline, not a limit on each wait; None: as long
    as it takes)."""

    connect: float | None
    read: float | None


class Answer(Protocol):
    """What orch reads of an answer: plain_http.Answer, or httpx.Response."""

    status_code: int

    @property
    def reason_phrase(self) -> str: ...
    @property
    def is_success(self) -> bool: ...
    @property
    def content(self) -> bytes: ...
    @property
    def headers(self) -> Any: ...  # looked up by name in any case: .get(name)
    def read(self) -> bytes: ...
    def json(self) -> Any: ...
    def iter_bytes(self) -> Iterator[bytes]: ...
    def iter_lines(self) -> Iterator[str]: ...


def _import_httpx() -> None:
    """Import httpx without its own command line (httpx._main), which imports click, pygments and
    much of rich when they are installed (as here) and which orch never uses. A None in
    sys.modules makes that import fail, and httpx falls back to a stub `main`; the entry is
    removed at once."""
    if "httpx" in sys.modules:
        return
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        if blocked and sys.modules.get("httpx._main", False) is None:
            del sys.modules["httpx._main"]


def segment(value: str | int, lists: str | None = None, *, numbers: bool = True) -> str:
    """`value` as one segment of a path (an id, a version, or a name the user typed: "a?b" or
    "a/versions/1" must name that one thing, never another path). An empty one is refused: it
    would name the collection instead (`/v1/tokens/` is the list), never one thing of it.
    `lists`: the command that lists what it names (`orch secret list`), for the fix; `numbers`:
    whether a number is taken (a version), or only text (a name that str() would make up)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int)
        or (not numbers and not isinstance(value, str))
    ):
        raise InvalidInput(
            f"A name or id must be text, not {kind_of(value)}.",
            "Pass the name or id as a str; the `list` calls show them.",
        )
    check_name(value, lists)
    if isinstance(value, str) and (fault := _text_fault(value, "The name or id")):
        raise fault
    return quote(str(value), safe="")


def text_name(value: object, what: str, lists: str | None = None, *, needed: bool = False) -> None:
    """InvalidInput, before any request, unless `value` (the argument `what`, a name or id sent
    in a body or a query) is text that names something, or None where it may be left out (not
    `needed`): 5 would be sent as "5", a name nobody gave. `lists`: as `check_name`'s."""
    if value is None and not needed:
        return
    if isinstance(value, bool) or not isinstance(value, str):
        shown = f"; `{lists}` shows them" if lists else ""
        raise InvalidInput(
            f"`{what}` is {kind_of(value)}, not text (a name or id).", f"Pass {what} as a str{shown}."
        )
    check_name(value, lists)
    if fault := _text_fault(value, f"`{what}`"):
        raise fault


def check_name(value: object, lists: str | None = None) -> None:
    """InvalidInput for an empty name or id, given where one may be left out (None): it names
    nothing, and taking it as "not given" would pick another thing (the default environment,
    every agent's runs) without a word. `lists`: the command that lists what it names."""
    if value == "":
        shown = f"`{lists}` shows them" if lists else "the `list` commands show them"
        raise InvalidInput(
            "An empty name or id was given, which names nothing.", f"Pass the name or id; {shown}."
        )


def flag(value: object, what: str) -> bool:
    """`value` if it is a bool, else InvalidInput naming the argument `what`: "no" or 0 would be
    taken as true or false by their truth, not by what they say."""
    if not isinstance(value, bool):
        raise InvalidInput(
            f"`{what}` is {kind_of(value)}, not True or False.", f"Pass {what}=True or {what}=False."
        )
    return value


def whole(value: object, what: str) -> int:
    """`value` as an int if it is a whole number (not a bool, not text; an integer of another
    library, such as numpy.int64, too), else InvalidInput naming the argument `what` (the
    server says which range it takes)."""
    number = python_number(value)
    if not isinstance(number, int):
        raise InvalidInput(
            f"`{what}` is {kind_of(value)}, not a whole number.", f"Pass {what} as an int, such as 20."
        )
    return number


def python_scalar(value: object) -> bool | int | float | None:
    """Python's own bool, int or float that `value`, a scalar of another library (numpy.bool,
    numpy.int64, numpy.float32: their `.item()`), stands for; else None (Python's own types
    too). Such a value is none of Python's types, so json can't send it as it is."""
    if type(value).__module__ == "builtins":
        return None
    try:
        item = getattr(value, "item", None)
        got = item() if callable(item) else None
    except Exception:  # noqa: BLE001 (an array of several items, or an `item` of another meaning)
        return None
    return got if type(got) in (bool, int, float) else None


def python_number(value: object) -> int | float | None:
    """`value` as Python's int or float, if it is a number: an int or float (not a bool), an
    integer of another library (`operator.index`), or another library's number scalar
    (`python_scalar`, not its bool); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if isinstance(value, int) else float(value)
    scalar = python_scalar(value)
    if scalar is not None:
        return None if isinstance(scalar, bool) else scalar
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def whole_seconds(value: object, what: str, example: int) -> int | None:
    """`value` (the argument `what`, a number of seconds the API takes as a whole number) as an
    int: an int, or a float of whole value (30.0) or another library's number (numpy.int64);
    None stays None. Else InvalidInput saying why: not a number, not finite, or a fraction of a
    second (`example`: a value to show in the fix). The server says which range it takes."""
    if value is None:
        return None
    number = python_number(value)
    if number is None:
        raise InvalidInput(
            f"`{what}` is {kind_of(value)}, not a number of seconds.",
            f"Pass {what} as a whole number of seconds, such as {what}={example}.",
        )
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidInput(
            f"`{what}` is {number}, which is no number of seconds.",
            f"Pass {what} as a whole number of seconds, such as {what}={example}.",
        )
    if isinstance(number, float) and not number.is_integer():
        below, above = math.floor(number), math.ceil(number)
        raise InvalidInput(
            f"`{what}` is {number!r} seconds: it takes whole seconds, not a fraction of one.",
            f"Pass {what}={above} (or {what}={below}).",
        )
    return int(number)


def function(value: object, what: str) -> None:
    """InvalidInput unless `value` is None or can be called (a callback such as `on_stdout`),
    checked before a request: calling it as the answer comes would fail after it began."""
    if value is not None and not callable(value):
        raise InvalidInput(
            f"`{what}` is {kind_of(value)}, not a function.",
            f"Pass a function that takes the text (e.g. {what}=print), or None.",
        )


SURROGATE_FIX = (
    "Pass UTF-8 text: a str decoded with errors='surrogateescape' (os.fsdecode, sys.argv) keeps the "
    "bytes that are not UTF-8 as such characters, so decode those bytes with errors='replace' instead."
)


def kind_of(value: object) -> str:
    """What `value` is, for a sentence: "None", "bytes", "a float"... A type of another module
    is named with its package when its name is a builtin's (numpy's bool is "a numpy.bool", not
    "a bool", which is what the sentence refuses) or it is another library's scalar (numpy's
    int64: "a numpy.int64")."""
    if value is None:
        return "None"
    kind = type(value)
    name = kind.__name__
    if isinstance(value, bytes | bytearray | memoryview):
        return name
    if kind.__module__ != "builtins" and (hasattr(builtins, name) or python_scalar(value) is not None):
        name = f"{kind.__module__.partition('.')[0]}.{name}"
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _text_fault(text: str, what: str) -> InvalidInput | None:
    """The error for text that is not UTF-8 (a lone surrogate, as surrogateescape leaves), else
    None."""
    try:
        text.encode()
    except UnicodeEncodeError as e:
        char = ascii(text[e.start])[1:-1]
        return InvalidInput(
            f"{what} holds a lone surrogate ({char}), which is not UTF-8 text.", SURROGATE_FIX
        )
    return None


def _json_fault(value: Any, path: str) -> InvalidInput | None:
    """The error for what in `value` (named `path`, such as `env['A']`) can't be sent as JSON:
    a type JSON does not have, NaN or an infinity, text that is not UTF-8; else None."""
    if value is None or isinstance(value, int):  # bool too
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return InvalidInput(
            f"{path} is {value}, which can't be sent as JSON (NaN and Infinity are not JSON values).",
            "Pass a finite number, or None.",
        )
    if isinstance(value, str):
        return _text_fault(value, path)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                fault = _text_fault(key, f"A key of {path}")
            elif key is None or isinstance(key, int | float):  # json.dumps makes them text
                fault = _json_fault(key, f"A key of {path}")
            else:
                fault = InvalidInput(
                    f"A key of {path} is {kind_of(key)}, which can't be sent as JSON.",
                    "Use text (str) for the keys of a dict.",
                )
            if fault is None:
                fault = _json_fault(item, f"{path[:-1]}[{key!r}]`")
            if fault is not None:
                return fault
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if fault := _json_fault(item, f"{path[:-1]}[{i}]`"):
                return fault
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return InvalidInput(
            f"{path} is {kind_of(value)}, which can't be sent as JSON: it takes text.",
            "Pass a str: decode the bytes first (data.decode()).",
        )
    scalar = python_scalar(value)
    if scalar is not None:  # numpy.bool, numpy.int64: a value of Python's types, as another's
        own = type(scalar).__name__
        return InvalidInput(
            f"{path} is {kind_of(value)} ({scalar!r}), not Python's own {own}, which is what json can send.",
            f"Convert it first: .item() (or {own}(…)) gives Python's {own}.",
        )
    return InvalidInput(
        f"{path} is {kind_of(value)}, which can't be sent as JSON.",
        "Pass text, numbers, booleans, None, or lists and dicts of them.",
    )


def check_json(value: Any, name: str) -> None:
    """InvalidInput, before any request, if `value` (the argument `name`) can't be sent as JSON
    as it is: see `_json_fault`. A value that holds itself, or is nested past Python's recursion
    limit, is refused too."""
    try:
        fault = _json_fault(value, f"`{name}`")
    except RecursionError:
        fault = InvalidInput(
            f"`{name}` is nested too deeply to be sent as JSON (or holds itself).",
            "Pass fewer levels of lists and dicts.",
        )
    if fault is not None:
        raise fault


def as_dict(value: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """A mapping argument (`env`) as a dict for a JSON body; None stays None, and what is not a
    mapping is refused (dict() would fail on it, or take a list of pairs)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"`{name}` is {kind_of(value)}, not a mapping.", f"Pass {name} as a dict of names and values."
        )
    return dict(value)


def encode_json(body: Any) -> bytes:
    """A request's JSON body, as httpx encodes one (compact, UTF-8, no NaN); what it can't hold
    raises InvalidInput naming the field (`env['A']`), for either backend alike."""
    if isinstance(body, dict):
        for name, value in body.items():
            check_json(value, str(name))
    else:
        check_json(body, "body")
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def body_bytes(data: object, what: str = "The request's body") -> bytes:
    """The bytes of a request's body: bytes, bytearray or memoryview as bytes, text as UTF-8.
    Anything else (None, a number, an iterator) is refused, by both backends alike."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        if fault := _text_fault(data, what):
            raise fault
        return data.encode()
    raise InvalidInput(
        f"{what} is {kind_of(data)}; it must be text (str, sent as UTF-8) or bytes.",
        "Pass a str or bytes (bytearray and memoryview are taken as bytes); b'' is an empty one.",
    )


def seconds(value: object, what: str, *, waited: bool = True) -> float:
    """`value` as a number of seconds, or InvalidInput: a number (not a bool, not text) and, if
    it is `waited` here, more than 0 and finite (else the server says what range it takes)."""
    number = python_number(value)  # numpy's numbers too, but not a bool
    if number is None:
        raise InvalidInput(
            f"{what} is {kind_of(value)}, not a number of seconds.",
            "Give the seconds as a number, such as 60.",
        )
    if waited and not 0 < number < float("inf"):  # also NaN
        raise InvalidInput(f"A timeout of {number} seconds can't be waited.", "Give more than 0 seconds.")
    return float(number)


def _check_token(token: str) -> str:
    """`token` if it can be an API token, else InvalidInput before any request: a token is
    printable ASCII without spaces (`orch_` and URL-safe characters), and anything else would fail
    in the HTTP header (a non-ASCII character) or split it (a line ending)."""
    bad = next((i for i, c in enumerate(token) if not "!" <= c <= "~"), None)
    if bad is not None:
        what = "a space or line ending" if token[bad].isspace() else "a character that is not printable ASCII"
        raise InvalidInput(
            f"The API token is not valid: it holds {what} (character {bad + 1}).",
            "Set ORCH_TOKEN, or the token in $ORCH_HOME/config.toml (`orch login --url URL --token "
            "TOKEN` writes it), to a token as `orch token create` printed it: orch_ and 43 letters, "
            "digits, '-' or '_'.",
        )
    return token


def _check_transport(transport: object) -> None:
    """InvalidInput unless `transport` is None or an httpx transport (`httpx.MockTransport`, an
    `httpx.HTTPTransport`...): anything else would fail at the first request, as a traceback."""
    if transport is None:
        return
    _import_httpx()
    import httpx

    if not isinstance(transport, httpx.BaseTransport):
        raise InvalidInput(
            f"`transport` is {kind_of(transport)}, not an httpx transport.",
            "Pass an httpx.BaseTransport (such as httpx.MockTransport or httpx.HTTPTransport), or "
            "leave it out.",
        )


def _proxied() -> bool:
    """True when the environment names a proxy for http:// requests (httpx would use it)."""
    return any(os.environ.get(k, "").strip() for k in PROXY_VARIABLES)


def _tls_unused(url: str) -> bool:
    """True when no connection of this client can use TLS: the server's address is http://, and
    requests to it go straight there or through an http:// proxy (redirects are not followed)."""
    if not url.startswith("http://"):
        return False
    proxies = (os.environ.get(k, "") for k in PROXY_VARIABLES)
    return not any(p.strip().lower().startswith("https://") for p in proxies)


class _Httpx:
    """Requests through httpx, failing as plain_http does (Timeout, Broken)."""

    def __init__(self, url: str, headers: dict[str, str], transport: httpx.BaseTransport | None) -> None:
        _import_httpx()
        import ssl

        import httpx

        # httpx loads the whole CA bundle for its default TLS context, whether or not a request
        # will use TLS: tens of ms (150 on a slow machine). When no connection can use TLS, a
        # context that trusts nothing does, and should one ever need TLS it fails rather than
        # go unverified.
        verify: ssl.SSLContext | bool = True
        if _tls_unused(url):
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client = httpx.Client(base_url=url, headers=headers, transport=transport, verify=verify)

    @contextmanager
    def stream(
        self, method: str, path: str, *, connect: float | None, read: float | None, **kwargs: Any
    ) -> Iterator[httpx.Response]:
        import httpx  # imported by __init__: a lookup

        try:
            with self.client.stream(
                method, path, timeout=httpx.Timeout(read, connect=connect), **kwargs
            ) as resp:
                yield resp
        except httpx.TimeoutException as e:
            raise plain_http.Timeout(type(e).__name__, str(e)) from None
        except (httpx.TransportError, httpx.DecodingError) as e:  # a body that does not decompress too
            raise plain_http.Broken(type(e).__name__, str(e)) from None

    def close(self) -> None:
        self.client.close()


VARIABLE_WINS_FIX = (
    "This token comes from ORCH_TOKEN, which wins over $ORCH_HOME/config.toml: set ORCH_TOKEN to a "
    "valid token, or unset it to use the one `orch login` saved."
)


class Transport:
    """Requests to one orch server as one workspace (its token); answers as parsed JSON.

    `get`, `post`, `put` and `delete` take `params`, `json`, `content`, `headers` and `timeout`
    (seconds, or a `Wait`; by default the client's, or a long poll's own: `_usual_wait`) and
    return the answer's JSON (None when it has no body); `send` returns the answer itself (read
    whole), `stream` an answer still arriving. Every error answer raises the OrchError subclass
    the server named, with its message and fix; an answer that is not an orch server's raises
    OrchError naming the URL (`_not_orch`)."""

    def __init__(
        self,
        url: str,
        token: str,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        for name, value in (("url", url), ("token", token)):
            if not isinstance(value, str):
                raise InvalidInput(
                    f"The server's {name} is {kind_of(value)}, not text.", f"Pass the {name} as a str."
                )
        if not url:
            raise ServerUnreachable(
                "No orch server is configured.",
                "Start one with `orch server` (same ORCH_HOME), or run `orch login --url URL --token TOKEN`.",
            )
        self.url = address(url)
        timeout = seconds(timeout, "The client's timeout")
        if timeout > LONGEST_TIMEOUT:
            raise InvalidInput(
                f"The client's timeout ({timeout:g} seconds) is longer than a request can wait: at "
                f"most {LONGEST_TIMEOUT:.0f} seconds (a year).",
                "Give `timeout` as the seconds one request may take, such as 60 (the default is 30).",
            )
        _check_transport(transport)
        _check_token(token)
        self.closed = False
        self.token_from_environment = False  # from_settings: the token is ORCH_TOKEN's
        self.wait = Wait(connect=min(timeout, 5.0), read=timeout)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._transport = transport
        self._backend = self._connections()

    def _connections(self) -> plain_http.PlainHTTP | _Httpx:
        """What keeps this client's connections to the server, for this process (`_forked`)."""
        self._pid = os.getpid()
        if self._transport is None and self.url.startswith("http://") and not _proxied():
            return plain_http.PlainHTTP(self.url, self.headers)
        return _Httpx(self.url, self.headers, self._transport)

    def _forked(self) -> None:
        """This process is a fork of the one that made the client (multiprocessing, a forking
        data loader): the connections it kept are the parent's too, and a request sent on one
        would read the parent's answer, or leave the parent its own (found by a tester: 21 of a
        child's 50 results were the parent's). The child drops its copies unused, never shut down
        (a TLS close would tell the server, for the parent too), and makes its own."""
        if os.getpid() != self._pid:
            self._backend = self._connections()

    @classmethod
    def from_settings(
        cls, home: Path | None = None, transport: httpx.BaseTransport | None = None
    ) -> Transport:
        """The server and token the settings name: ORCH_URL and ORCH_TOKEN, else what `orch
        login` or the local `orch server` wrote in $ORCH_HOME/config.toml (`transport`: as
        the constructor's)."""
        cfg = config_mod.load(home)
        made = cls(cfg.url, cfg.token, transport)
        # ORCH_TOKEN wins over the file: a token it holds that the server refuses is said so,
        # not sent looking in config.toml (where `orch login` saved another).
        made.token_from_environment = bool(cfg.token) and os.environ.get("ORCH_TOKEN") == cfg.token
        return made

    def check_server(self) -> None:
        """That an orch server answers at the URL and takes the token, as `orch login` checks
        before it saves them: the token's workspaces are an answer only orch gives (never an
        empty list: the token's own is in it; each with an id `ws_…` and a name). An error
        answer raises as any does (Unauthorized for a token it refuses); an answer of another
        shape, from another program at the URL, raises `not_understood`."""
        found = listed(self.get("/v1/workspaces"))
        if not found:
            raise not_understood(self.url, "an empty list where orch lists the token's workspace")
        for workspace in found:
            ws_id, name = workspace["id"], workspace["name"]
            if not isinstance(ws_id, str) or not ws_id.startswith("ws_") or not isinstance(name, str):
                raise not_understood(
                    self.url, f"a workspace {as_json_text(ws_id)} where orch sends one whose id is ws_…"
                )

    def waiting(self, seconds: float | None) -> Wait:
        """A timeout for a request whose answer may take `seconds` (None: as long as it takes),
        connecting within the usual limit."""
        return Wait(connect=self.wait.connect, read=seconds)

    def until(self, deadline: float | None, params: Mapping[str, Any] | None = None) -> Wait:
        """The timeout of a request (a long poll's, by its `params`) made for a caller that must
        end by `deadline` (a time.monotonic(); None: no such caller): its usual one, cut to what
        is left of the deadline and the client's limit for one request, so that a server that
        stops answering keeps the caller at most that limit past its deadline."""
        usual = self._usual_wait(params)
        if deadline is None or usual.read is None:
            return usual
        left = max(0.0, deadline - time.monotonic())
        return self.waiting(min(usual.read, left + (self.wait.read or 0.0)))

    def _usual_wait(self, params: Mapping[str, Any] | None) -> Wait:
        """The timeout of a request that names none: the client's, or for a long poll (`wait` in
        `params`) that poll's wait and POLL_MARGIN when that is longer. A wait the API refuses
        (more than LONGEST_POLL, not a number) is refused at once, within the client's limit."""
        wait = (params or {}).get("wait")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= LONGEST_POLL:
            return self.wait
        return self.waiting(max(wait + POLL_MARGIN, self.wait.read or 0.0))

    def send(self, method: str, path: str, **kwargs: Any) -> Answer:
        """The answer to one request, read whole (its `json()` is `decode`'s); an error answer
        raises."""
        with self.stream(method, path, **kwargs) as resp:
            resp.read()
        return Read(resp, self.url)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Answer]:
        """The answer to one request as it arrives (iter_lines, iter_bytes); an error answer
        raises before the block runs, and a connection that breaks inside it raises too."""
        if self.closed:
            raise InvalidInput("This client was closed; make a new Client.", CLOSED_FIX)
        if (body := kwargs.pop("json", None)) is not None:
            # Encoded here, not by the backend: both send the same bytes, and refuse alike.
            kwargs["content"] = encode_json(body)
            kwargs["headers"] = {"Content-Type": "application/json", **(kwargs.get("headers") or {})}
        elif kwargs.get("content") is not None:
            kwargs["content"] = body_bytes(kwargs["content"])
        if params := kwargs.get("params"):
            for name, value in params.items():
                for item in value if isinstance(value, list | tuple) else (value,):
                    if isinstance(item, str) and (fault := _text_fault(item, f"`{name}`")):
                        raise fault
        timeout = kwargs.pop("timeout") if "timeout" in kwargs else self._usual_wait(params)
        if not isinstance(timeout, Wait):  # seconds, or None: for connecting and reading alike
            timeout = Wait(connect=timeout, read=timeout)
        try:
            self._forked()
            with self._backend.stream(
                method, path, connect=timeout.connect, read=timeout.read, **kwargs
            ) as resp:
                if not resp.is_success:
                    resp.read()
                    error = _error(resp, self.url)
                    if isinstance(error, Unauthorized) and self.token_from_environment:
                        error.fix = VARIABLE_WINS_FIX
                    raise error
                yield resp
        except plain_http.Broken as e:
            cut = (
                ServerUnreachable(
                    f"The orch server at {self.url} did not answer in time ({e.kind}).",
                    "Check that it is running and not overloaded (`orch server`), then try again.",
                )
                if isinstance(e, plain_http.Timeout)
                else ServerUnreachable(
                    f"Cannot reach the orch server at {self.url} ({e.kind}).",
                    "Start it with `orch server`, or check ORCH_URL / `orch login`.",
                )
            )
            cut.never_sent = e.kind in ("ConnectError", "ConnectTimeout")
            raise cut from None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON, read by `decode`. An answer without a body is None when it is a 204
        or answers a DELETE; any other (orch always sends one) is an empty `Reply`, which says so
        when it is read."""
        resp = self.send(method, path, **kwargs)
        if not resp.content:
            return None if resp.status_code == 204 or method == "DELETE" else Reply(self.url, empty=True)
        return decode(resp, self.url)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        """Close its connections; a request after this raises InvalidInput (on either backend)."""
        self.closed = True
        self._backend.close()


CLOSED_FIX = (
    "A client is closed by close() or at the end of its `with` block; make the calls inside "
    "the block, or make a new Client for later ones."
)


def decode(resp: Answer, url: str, line: str | bytes | None = None) -> Any:
    """The JSON of a success answer from `url` (or of one `line` of a streamed one), the one
    reader of every answer the client and the CLI read: its objects are `Reply`s and its lists
    `Replies`, so an answer of another shape than orch's (`{}`, a list for an object, a field
    missing), from something else at the URL or another version's server, raises
    `not_understood` where it is read, not KeyError or TypeError; `listed` checks an answer read
    as a list. A body that is not JSON raises `_not_orch`; one that is neither an object nor a
    list (orch's answers always are one of them) raises `not_understood`."""

    def replies(value: list[Any]) -> Replies:
        return Replies(url, (replies(v) if type(v) is list else v for v in value))

    def hook(pairs: list[tuple[str, Any]]) -> Reply:
        return Reply(url, ((k, replies(v) if type(v) is list else v) for k, v in pairs))

    try:
        data = json.loads(resp.content if line is None else line, object_pairs_hook=hook)
        if type(data) is list:
            data = replies(data)
    except (ValueError, RecursionError):  # not JSON (nor UTF-8): a web page, say; or nested past reading
        raise _not_orch(resp, url) from None
    if not isinstance(data, Reply | Replies):
        raise not_understood(url, f"{as_json_text(data)} where orch sends an object or a list")
    return data


def listed(value: Any) -> Any:
    """`value`, an answer that orch sends as a list of objects (`decode`'s), checked: an object
    where the list should be (which would be read as its keys), or a list of something else,
    raises `not_understood`."""
    if isinstance(value, Reply):
        raise not_understood(
            value.url, "an empty answer" if value.empty else "an object where orch sends a list"
        )
    if isinstance(value, Replies):
        for item in value:
            if not isinstance(item, Reply):
                raise not_understood(
                    value.url, f"a list holding {as_json_text(item)} where orch sends objects"
                )
    return value


def decode_lines(resp: Answer, url: str) -> Iterator[Reply]:
    """The objects of a streamed answer of JSON lines (application/x-ndjson: a command's output
    in a sandbox), each read by `decode` as an object; blank lines are skipped."""
    for line in resp.iter_lines():
        if line.strip():
            event = decode(resp, url, line)
            if not isinstance(event, Reply):
                raise not_understood(url, "a list where orch sends an object")
            yield event


def as_json_text(value: Any) -> str:
    """`value` of an answer, for a sentence: `null`, `"x"`, `3` (cut at 40 characters)."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:39] + "…"


class Reply(dict[str, Any]):
    """An object of an answer (see `decode`): a key it lacks, read as `reply[key]`, raises
    `not_understood` naming the key and the server's URL; `get` and `in` are a dict's. `empty`:
    it stands for an answer without a body."""

    __slots__ = ("empty", "url")

    def __init__(self, url: str, pairs: Any = (), *, empty: bool = False) -> None:
        super().__init__(pairs)
        self.url, self.empty = url, empty

    def __missing__(self, key: str) -> Any:
        raise not_understood(self.url, "an empty answer" if self.empty else f"an object without `{key}`")

    def __reduce__(self) -> Any:  # copy and pickle as a plain dict
        return (dict, (dict(self),))


class Replies(list[Any]):
    """A list of an answer (see `decode`): read as an object (`found["id"]`, `found.get("id")`,
    where orch sends one), it raises `not_understood` rather than TypeError or AttributeError."""

    __slots__ = ("url",)

    def __init__(self, url: str, items: Any = ()) -> None:
        super().__init__(items)
        self.url = url

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            raise not_understood(self.url, f"a list where orch sends an object with `{key}`")
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        raise not_understood(self.url, f"a list where orch sends an object with `{key}`")

    def __reduce__(self) -> Any:
        return (list, (list(self),))


class Read:
    """An answer `Transport.send` read whole: the backend's, with `decode` for its `json()`."""

    def __init__(self, resp: Answer, url: str) -> None:
        self.resp, self.url = resp, url
        self.status_code = resp.status_code

    @property
    def reason_phrase(self) -> str:
        return self.resp.reason_phrase

    @property
    def is_success(self) -> bool:
        return self.resp.is_success

    @property
    def content(self) -> bytes:
        return self.resp.content

    @property
    def headers(self) -> Any:
        return self.resp.headers

    def read(self) -> bytes:
        return self.resp.read()

    def json(self) -> Any:
        return decode(self.resp, self.url)

    def iter_bytes(self) -> Iterator[bytes]:
        return self.resp.iter_bytes()

    def iter_lines(self) -> Iterator[str]:
        return self.resp.iter_lines()


def not_understood(url: str, what: str) -> OrchError:
    """What an answer of JSON that is not of orch's shape raises (`what`: what it was, such as
    "an object without `id`"): something other than this version's orch server answered at `url`
    (another program, a proxy), or a server of another version."""
    return OrchError(
        f"The server at {url} answered something orch does not understand: {what}.",
        f"Check that {url} is the address `orch server` printed (ORCH_URL, or `orch login --url URL "
        "--token TOKEN`) and that it runs the version of orch this one is (`orch --version`).",
    )


def _error(resp: Answer, url: str) -> OrchError:
    """The exception an error answer stands for: the server's own, else `_not_orch`."""
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict) or "message" not in data:
        return _not_orch(resp, url)
    return from_dict(data)


def _not_orch(resp: Answer, url: str) -> OrchError:
    """What an answer that is not an orch server's raises (an error without orch's body, a body
    that is not JSON): its status, and that what answered at `url` is something else (another
    web server, a proxy, a captive portal)."""
    return OrchError(
        f"The server answered {resp.status_code} {resp.reason_phrase}, not as an orch server "
        f"answers: something else answers at {url}.",
        f"Check that {url} is the address `orch server` printed (ORCH_URL, or `orch login --url URL "
        "--token TOKEN`); a proxy on the way may have answered for a server that is down.",
    )


URL_FIX = (
    "Give the server's address as `orch server` printed it, such as http://127.0.0.1:8750 (in "
    "ORCH_URL, or with `orch login --url URL --token TOKEN`)."
)


def address(url: str) -> str:
    """`url` as a server's address (without its last slash), or InvalidInput before any
    request: see `_check_url`; and the API's path (`…/v1`) is not the server's root."""
    _check_url(url)  # as given: "http://" stripped of its slashes would be quoted as "http:"
    root = url.rstrip("/")
    if root.endswith("/v1"):
        raise InvalidInput(
            f"The server's URL is its root, not its API's path: {root} ends in /v1.",
            f"Use {root.removesuffix('/v1')}.",
        )
    return root


def check_url_variable() -> None:
    """InvalidInput, before any request, when ORCH_URL holds an address no server has: it wins
    over $ORCH_HOME/config.toml, so every command in this shell would refuse it, and `orch
    login` would save an address that none of them uses. (Empty, it counts as unset.)"""
    given = os.environ.get("ORCH_URL", "")
    if not given:
        return
    try:
        address(given)
    except InvalidInput as e:
        raise InvalidInput(
            f"{e.message.removesuffix('.')}: that address is ORCH_URL's, set in this shell, which "
            "wins over what `orch login` saves in $ORCH_HOME/config.toml.",
            "Unset it (`unset ORCH_URL`) to use the address `orch login` saves, or set it to the "
            "server's address, such as http://127.0.0.1:8750.",
        ) from None


def _check_url(url: str) -> None:
    """InvalidInput unless `url` can be a server's address: http:// or https://, a host, a valid
    port if any, and no query or fragment. Said before any request: no server would answer at
    such a URL, so "cannot reach" would send its user looking for one."""
    from urllib.parse import urlsplit

    # urlsplit drops leading spaces and control characters, which httpx does not.
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidInput(f"The server's URL {url!r} has a space or a control character in it.", URL_FIX)
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError as e:  # "http://[::1", a port that is not a number or past 65535
        if "port" in str(e).lower():
            raise InvalidInput(
                f"The server's URL {url!r} has no valid port (a number from 1 to 65535).", URL_FIX
            ) from None
        raise InvalidInput(
            f"The server's URL {url!r} is not an http:// or https:// address.", URL_FIX
        ) from None
    if usable and (parts.query or parts.fragment):
        extra = f"?{parts.query}" if parts.query else f"#{parts.fragment}"
        raise InvalidInput(
            f"The server's URL {url!r} has a {'query' if parts.query else 'fragment'} ({extra}), which "
            "no server's address has.",
            URL_FIX,
        )
    if not usable and parts.scheme in ("http", "https") and not parts.hostname:
        raise InvalidInput(f"The server's URL {url!r} names no host.", URL_FIX)
    if not usable and parts.scheme in ("http", "https"):  # port 0
        raise InvalidInput(f"The server's URL {url!r} has no valid port (a number from 1 to 65535).", URL_FIX)
    if not usable:
        raise InvalidInput(f"The server's URL {url!r} is not an http:// or https:// address.", URL_FIX)
