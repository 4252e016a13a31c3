"""orch's Python client: `from orch import Client` (see docs/client.md).

    client = Client()                      # the server and token the CLI would use
    run = client.runs.create("hello", input={"name": "Ada"}).wait()
    print(run.status, run.stdout)
    with client.sandboxes.create() as box:
        print(box.exec("echo hi").stdout)

Names are imported when first used, so that the CLI, which uses `orch.client.transport` alone,
does not pay for the rest.

    module          what
    client.py       Client: settings, and one resource per noun
    transport.py    Transport: the HTTP layer the CLI uses too (httpx, or plain_http);
                    errors as orch.errors; `decode`, the one reader of an answer's JSON
    plain_http.py   requests to a plain http:// server over a socket (no httpx, no http.client)
    follow.py       `follow`, the one reader of a run's output (`orch run`, Run.wait)
    exec_stream.py  `exec_events`, the one reader of a command's streamed answer
                    (`orch sandbox exec`, Sandbox.exec)
    runs.py         Run
    sandboxes.py    Sandbox, ExecResult
    records.py      Agent, AgentVersion, Environment, EnvironmentRef, Secret
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orch.client.client import Client as Client
    from orch.client.records import Agent as Agent
    from orch.client.records import AgentVersion as AgentVersion
    from orch.client.records import Environment as Environment
    from orch.client.records import EnvironmentRef as EnvironmentRef
    from orch.client.records import Secret as Secret
    from orch.client.runs import Run as Run
    from orch.client.sandboxes import ExecResult as ExecResult
    from orch.client.sandboxes import Sandbox as Sandbox
    from orch.client.transport import Transport as Transport

_WHERE = {
    "Client": "client",
    "Transport": "transport",
    "Run": "runs",
    "Sandbox": "sandboxes",
    "ExecResult": "sandboxes",
    "Agent": "records",
    "AgentVersion": "records",
    "Environment": "records",
    "EnvironmentRef": "records",
    "Secret": "records",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'orch.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"orch.client.{_WHERE[name]}"), name)
