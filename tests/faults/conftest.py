"""Faults injected into a real platform (fixtures shared with integration)."""

from tests.integration.conftest import Server, make_server  # noqa: F401 - shared fixtures
