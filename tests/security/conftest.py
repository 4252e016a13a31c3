"""Hostile agents run through a real server on real runtimes (fixtures shared with integration).

Under runc, the server's default isolation. Under gVisor (ORCH_ISOLATION=gvisor) 11 of the 12
cases pass by hand; the fork bomb there kills gVisor's own kernel (its threads share the pids
cgroup) and the run fails with "exit code 2" or times out, so the gVisor run is not in CI yet
(docs/trust.md)."""

from tests.integration.conftest import Server, make_server, server  # noqa: F401 - shared fixtures
