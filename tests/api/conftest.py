from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from orch.server.app import create_app
from orch.services.platform import Platform


@pytest.fixture
def api(platform: Platform, workspace: tuple[str, str]) -> Iterator[TestClient]:
    """An in-process client of the app, authenticated as `workspace`; builds run via drain()."""
    app = create_app(platform, workers=False)
    with TestClient(app, headers={"Authorization": f"Bearer {workspace[1]}"}) as client:
        yield client
