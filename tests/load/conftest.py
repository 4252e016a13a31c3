"""Load on a real server on real Podman (fixtures shared with integration)."""

from tests.integration.conftest import Server, make_server  # noqa: F401 - shared fixtures
