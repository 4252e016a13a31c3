from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from orch.server.app import create_app
from orch.services.platform import Platform
from tests.asgi import in_process


@pytest.fixture
def api(platform: Platform, workspace: tuple[str, str]) -> Iterator[httpx.Client]:
    """An in-process client of the app, authenticated as `workspace`; builds run via drain()."""
    app = create_app(platform, workers=False)
    with (
        in_process(app) as transport,
        httpx.Client(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {workspace[1]}"},
        ) as client,
    ):
        yield client
