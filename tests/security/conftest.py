"""Hostile agents run through a real server on real runtimes (fixtures shared with integration):
every case under each isolation runtime, runc and gVisor."""

import pytest

from tests.integration.conftest import Server, make_server  # noqa: F401 - shared fixtures


@pytest.fixture(params=["runc", "gvisor"])
def server(make_server, request: pytest.FixtureRequest) -> Server:  # type: ignore[no-untyped-def]  # noqa: F811
    s: Server = make_server()
    s.settings = {"ORCH_ISOLATION": request.param}
    s.start()
    return s
