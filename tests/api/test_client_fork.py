"""A client used across a fork (multiprocessing, a forking data loader): the child makes its own
connection to the server and leaves the parent's to the parent. Found by a tester: parent and
child shared the kept-alive connection, and each read the other's answers without an error (21
of a child's 50 results were the parent's)."""

from __future__ import annotations

import ast
import os

import pytest

from orch.client import plain_http
from orch.client.transport import Transport


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def kept(transport: Transport) -> list[tuple[str, int]]:
    """The addresses of the connections the transport keeps for its next requests."""
    backend = transport._backend
    assert isinstance(backend, plain_http.PlainHTTP)
    return [conn.sock.getsockname() for conn in backend._idle]


def test_a_forked_child_makes_its_own_connection_and_leaves_the_parents(
    served: tuple[str, str], workspace: tuple[str, str]
) -> None:
    transport = Transport(served[0], workspace[1])
    try:
        forked(transport)
    finally:
        transport.close()


def forked(transport: Transport) -> None:
    assert isinstance(transport.get("/v1/agents"), list)
    [parents] = kept(transport)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one request, then what it kept, said to the parent
        code = 1
        try:
            os.close(read)
            transport.get("/v1/agents")
            os.write(write, repr(kept(transport)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        said = os.read(read, 4096).decode()
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, said
    childs = ast.literal_eval(said)
    assert childs and parents not in childs  # a connection of its own
    # The parent's connection is the parent's still: it answers the parent on it.
    assert isinstance(transport.get("/v1/agents"), list)
    assert kept(transport) == [parents]
