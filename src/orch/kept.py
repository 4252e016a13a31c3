"""One object per owner, made at first use: what a platform keeps without declaring a field for it
(its metrics, routing, output flusher, held log files), so modules that only some servers use add
no field to Platform, and two platforms in one process (tests, a node beside a server) each keep
their own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Reentrant: what one `make` builds may keep something of its own on the same owner.
_making = threading.RLock()


def kept(owner: object, name: str, make: Callable[[], T]) -> T:
    """The object `owner` keeps under `name`, made by `make` the first time it is asked for (once,
    from any thread). Looked up in the owner's own attributes, so a stand-in whose attributes
    appear on demand (a mock) still gets one made."""
    found: T | None = vars(owner).get(name)
    if found is None:
        with _making:
            found = vars(owner).get(name)
            if found is None:
                found = make()
                setattr(owner, name, found)
    return found
