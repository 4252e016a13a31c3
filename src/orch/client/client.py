"""`orch.Client`: orch's API from Python, as the CLI uses it."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from orch import config as config_mod
from orch.client.records import Agents, Environments, Secrets
from orch.client.runs import Runs
from orch.client.sandboxes import Sandboxes
from orch.client.transport import Transport, kind_of
from orch.errors import InvalidInput

if TYPE_CHECKING:
    import httpx


class Client:
    """A client of one orch server, acting as the workspace its token belongs to.

    With no arguments it finds the server as the CLI does: ORCH_URL and ORCH_TOKEN, else what
    `orch login` or the local `orch server` wrote in $ORCH_HOME/config.toml (`home` names another
    ORCH_HOME); `url` and `token` given here win. `timeout` bounds each request (seconds; long
    polls and commands in sandboxes wait longer on their own). Close it, or use it in a `with`
    block, to release its connections."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        home: str | Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if home is not None and not isinstance(home, str | os.PathLike):
            raise InvalidInput(
                f"`home` is {kind_of(home)}, not a path.", "Pass the ORCH_HOME directory as a str or a Path."
            )
        if url is None or token is None:
            cfg = config_mod.load(Path(home) if home is not None else None)
            url = cfg.url if url is None else url
            token = cfg.token if token is None else token
        self.http = Transport(url, token, transport=transport, timeout=timeout)
        self.runs = Runs(self.http)
        self.agents = Agents(self.http)
        self.environments = Environments(self.http)
        self.secrets = Secrets(self.http)
        self.sandboxes = Sandboxes(self.http)

    @property
    def url(self) -> str:
        return self.http.url

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"
