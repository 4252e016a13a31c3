"""The CLI's HTTP client: finds the server from the settings, turns error answers into OrchError."""

from __future__ import annotations

from typing import Any

import httpx

from orch import config as config_mod
from orch.errors import OrchError, ServerUnreachable, from_dict


class Client:
    def __init__(self, url: str, token: str, transport: httpx.BaseTransport | None = None) -> None:
        if not url:
            raise ServerUnreachable(
                "No orch server is configured.",
                "Start one with `orch server` (same ORCH_HOME), or run `orch login --url URL --token TOKEN`.",
            )
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(30.0, connect=5.0),
            transport=transport,
        )

    @classmethod
    def from_settings(cls) -> Client:
        cfg = config_mod.load()
        return cls(cfg.url, cfg.token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise ServerUnreachable(
                f"Cannot reach the orch server at {self.url} ({type(e).__name__}).",
                "Start it with `orch server`, or check ORCH_URL / `orch login`.",
            ) from None
        if resp.is_success:
            return resp.json()
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict) or "message" not in data:
            data = {"message": f"The server answered {resp.status_code} {resp.reason_phrase}."}
        raise from_dict(data)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


__all__ = ["Client", "OrchError"]
