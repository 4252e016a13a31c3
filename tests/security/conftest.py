"""Hostile agents run through a real server on real runtimes (fixtures shared with integration):
every case under each isolation runtime, runc and gVisor (runsc from bookworm-backports, which
scripts/setup installs: bookworm's own 2022 runsc crashed on the fork bomb). One server per
runtime serves the module's cases, each in runs of its own."""

from collections.abc import Iterator

import pytest

from tests.integration.conftest import Server, make_server  # noqa: F401 - shared fixture


@pytest.fixture(scope="module", params=["runc", "gvisor"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp(f"hostile-{request.param}") / "home")
    s.settings = {"ORCH_ISOLATION": request.param}
    s.start()
    try:
        yield s
    finally:
        s.stop()
        s.cleanup()
