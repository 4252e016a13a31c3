"""How orch's long-running processes (the server, a cluster node's agent) log: INFO and above,
one line each, named after the module that said it.

The HTTP client library's own loggers stay at WARNING: at INFO it says a line for every request
its clients send (the sandbox relay's calls to a node, each one naming its sandbox), which is
the client's business, not the operator's. A managed loop's calls to its model go through a
client of their own whose records are dropped (loop/client.py).
"""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"
# httpx logs each request; Alembic its context and each step it runs (twenty-odd lines for a new
# store, some of several lines), where the store's migration is said by Store.migrate's two lines.
QUIET = ("httpx", "httpcore", "alembic")


def configure() -> None:
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
