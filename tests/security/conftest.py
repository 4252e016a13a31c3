"""Hostile agents run on real Podman through a real server (fixtures shared with integration)."""

from tests.integration.conftest import Server, make_server, server  # noqa: F401 - shared fixtures
