"""The HTTP client a run's model calls go through, one per run, given to the provider's SDK: each
answer bounded (answer_size.py), and `close()`, at the run's end, ending a call still in flight.

A call the loop stopped waiting for (the run's deadline, a cancel: watch.py) goes on in a thread
of its own, blocked reading the endpoint's answer. Its read timeout starts again with every byte,
so an endpoint that trickles its answer (or takes minutes to begin it) would keep that thread and
its connection for as long as it liked: one of each per ended run. Closing the socket would not
wake the read (a blocked read holds the connection open); shutting it down does: the read fails
at once, the call's thread ends, and the connection is closed. So the client keeps the
connections it opens (httpcore's `trace` extension hands each one over as it is made) and shuts
them all down when it is closed; one opened after that is shut down as it comes.

It follows no redirect. The endpoint is one of the server's `model_endpoints` (endpoints.py)
so that a workspace cannot make the server send requests where only the server reaches (its own
API, the cloud's metadata address); a redirect from it would lead anywhere, and the
conversation with it. A model API does not redirect its POSTs, so a 3xx ends the call:
`Redirected`, which says where it pointed.

It writes nothing to the server's log. The HTTP library logs each request it sends, at INFO
(`HTTP Request: POST … "HTTP/1.1 503 <reason phrase>"`), and its connections at DEBUG, headers
included, as the providers' SDKs log each answer at DEBUG: the reason phrase is whatever the
endpoint wrote there (the API key it was sent, escape sequences that would clear the terminal of
whoever reads the log), and no mask is at hand where they log. So while a run's client sends or
closes, and while an SDK calls through it (`unlogged`), those loggers drop what they are given
(`_quiet`); other clients of the library log as they did."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

from orch.loop.answer_size import BoundedClient

Trace = Callable[[str, dict[str, Any]], None]
_REDIRECTS = frozenset({301, 302, 303, 307, 308})  # the statuses that send a request elsewhere
# The loggers the HTTP library and the providers' SDKs write to while they send a request (a
# filter is the logger's own: a child logger's records are not filtered by its parent's).
_LOGGERS = (
    "openai._base_client",
    "openai._response",
    "anthropic._base_client",
    "anthropic._response",
    "anthropic._tracing",
    "httpx2",
    "httpcore2",
    "httpcore2.connection",
    "httpcore2.connection_pool",
    "httpcore2.http11",
    "httpcore2.http2",
    "httpcore2.proxy",
    "httpcore2.socks",
)
_working = contextvars.ContextVar("orch_loop_client", default=False)  # a RunClient sends or closes


def _quiet(record: logging.LogRecord) -> bool:
    """A logging filter: no record of what a run's client does (`_working`)."""
    return not _working.get()


@contextlib.contextmanager
def unlogged() -> Iterator[None]:
    """What the HTTP library (and an SDK: model.sdk_errors) does within logs nothing (`_quiet`)."""
    working = _working.set(True)
    try:
        yield
    finally:
        _working.reset(working)


for _name in _LOGGERS:
    logging.getLogger(_name).addFilter(_quiet)


class Redirected(Exception):
    """The endpoint answered a redirect, which is not followed; `location`: where it pointed,
    made absolute (`absolute`), whole and unmasked (`redirected` says it in a sentence)."""

    def __init__(self, status: int, location: str | None) -> None:
        super().__init__(f"the model endpoint answered {status}")
        self.status, self.location = status, location


def redirected(status: int, location: str | None) -> str:
    """The run's reason for a redirect answer; `location` as the reason may show it (masked and
    cut: model.quoted), None for none."""
    if status not in _REDIRECTS:  # 300, 304, 305...: no answer to a model call, and no redirect
        return f"the model endpoint answered {status}, which is no answer to a model call"
    where = f"a redirect to {location}" if location else "a redirect with no Location"
    return (
        f"the model endpoint answered {status}, {where}, which orch does not follow: set "
        "loop.base_url to where it points, if that address is in the server's model_endpoints"
    )


class RunClient(BoundedClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._streams: weakref.WeakSet[httpcore2.NetworkStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        request.extensions["trace"] = self._trace(request.extensions.get("trace"))
        kwargs["follow_redirects"] = False  # whatever the SDK asks for this request
        with unlogged():  # the library logs nothing of it (the module's docstring)
            response = super().send(request, **kwargs)
        if 300 <= response.status_code < 400:
            raise Redirected(response.status_code, _location(request, response))
        return response

    def _trace(self, given: Trace | None) -> Trace:
        """A trace callback that keeps each connection as it is made (its TCP stream, then its
        TLS one), and calls `given`, the request's own, if it had one."""

        def trace(name: str, info: dict[str, Any]) -> None:
            stream = info.get("return_value")
            if name.endswith(".complete") and isinstance(stream, httpcore2.NetworkStream):
                with self._lock:
                    closed = self._closed
                    if not closed:
                        self._streams.add(stream)
                if closed:  # made while the client closed: it has no call to serve
                    _shut(stream)
            if given is not None:
                given(name, info)

        return trace

    def close(self) -> None:
        """Close the client: every connection it opened is shut down first, so a call still
        reading an answer ends at once."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
        for stream in streams:
            _shut(stream)
        with unlogged():
            super().close()


def _location(request: httpx2.Request, response: httpx2.Response) -> str | None:
    """Where a redirect points: its Location, made absolute."""
    location = response.headers.get("location", "").strip()
    return absolute(str(request.url), location) if location else None


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def absolute(url: str, location: str) -> str:
    """`location` made absolute against `url`, the request's, by putting what it lacks of `url`
    before it, as text: the Location's own characters are kept as it gave them (none encoded,
    no host lowercased or put in punycode, no `..` resolved), so that the masker sees a value in
    it as the endpoint wrote it (`Mask.url`)."""
    if _SCHEME.match(location):
        return location
    base = urlsplit(url)
    if location.startswith("//"):
        return f"{base.scheme}:{location}"
    origin = f"{base.scheme}://{base.netloc}"
    if location.startswith("/"):
        return origin + location
    if location.startswith("?"):
        return origin + base.path + location
    if location.startswith("#"):
        return origin + base.path + (f"?{base.query}" if base.query else "") + location
    return origin + base.path[: base.path.rfind("/") + 1] + location


def _shut(stream: httpcore2.NetworkStream) -> None:
    sock = stream.get_extra_info("socket")
    if not isinstance(sock, socket.socket):
        return
    # The plain socket's own shutdown, a TLS socket's too: ssl.SSLSocket.shutdown would also
    # drop its TLS state under the thread reading through it. OSError: closed already.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
