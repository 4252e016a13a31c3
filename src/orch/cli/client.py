"""The CLI's name for orch.client's HTTP layer: `Client` is `orch.client.transport.Transport`
(`Client.from_settings()`, `.get/.post/.put/.delete(path, **kw)` returning the answer's JSON,
raising OrchError). The CLI's modules import the transport itself; this name stays for the code
and the tests written against it, and patching `Client.from_settings` patches every command."""

from __future__ import annotations

from orch.client.transport import Transport as Client
from orch.errors import OrchError

__all__ = ["Client", "OrchError"]
