"""The HTTP client a run's model calls go through, one per run, given to the provider's SDK: each
answer bounded (answer_size.py), and `close()`, at the run's end, ending a call still in flight.

A call the loop stopped waiting for (the run's deadline, a cancel: watch.py) goes on in a thread
of its own, blocked reading the endpoint's answer. Its read timeout starts again with every byte,
so an endpoint that trickles its answer (or takes minutes to begin it) would keep that thread and
its connection for as long as it liked: one of each per ended run. Closing the socket would not
wake the read (a blocked read holds the connection open); shutting it down does: the read fails
at once, the call's thread ends, and the connection is closed. So the client keeps the
connections it opens (httpcore's `trace` extension hands each one over as it is made) and shuts
them all down when it is closed; one opened after that is shut down as it comes."""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

import httpcore2
import httpx2

from orch.loop.answer_size import BoundedClient

Trace = Callable[[str, dict[str, Any]], None]


class RunClient(BoundedClient):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._streams: weakref.WeakSet[httpcore2.NetworkStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        request.extensions["trace"] = self._trace(request.extensions.get("trace"))
        return super().send(request, **kwargs)

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
        super().close()


def _shut(stream: httpcore2.NetworkStream) -> None:
    sock = stream.get_extra_info("socket")
    if not isinstance(sock, socket.socket):
        return
    # The plain socket's own shutdown, a TLS socket's too: ssl.SSLSocket.shutdown would also
    # drop its TLS state under the thread reading through it. OSError: closed already.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
