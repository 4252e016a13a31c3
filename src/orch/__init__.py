"""orch: run AI agents in isolated sandboxes, in environments each workspace shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orch.client import Client

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # `from orch import Client` imports the client then: `orch --version` and the server don't.
    if name == "Client":
        from orch.client import Client

        return Client
    raise AttributeError(f"module 'orch' has no attribute {name!r}")
