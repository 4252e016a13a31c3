"""A service deployment's build log as a workspace sees it: nothing of the server's machine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orch.engine.fake import FakeEngine
from orch.services.platform import HOME_LABEL, Platform
from tests.api.test_services import deployed


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> None:
    platform.probe = lambda address, port: True


@pytest.fixture
def podman_labels(fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake engine's build, ending as Podman's does with a build's `--label`s: a LABEL step
    for each, its value written out (`STEP 6/10: LABEL "org.orch.home"="/root/.orch"`)."""
    build = fake_engine.build

    def labelled(request: Any, on_output: Callable[[str], None], *args: Any, **kwargs: Any) -> Any:
        info = build(request, on_output, *args, **kwargs)
        labels = sorted(request.labels.items())
        for n, (key, value) in enumerate(labels, 1):
            on_output(f'STEP {n}/{len(labels)}: LABEL "{key}"="{value}"')
        return info

    monkeypatch.setattr(fake_engine, "build", labelled)


def test_a_deployments_log_names_the_data_directorys_label_but_not_the_path(
    api: httpx.Client, platform: Platform, tmp_path: Path, podman_labels: None
) -> None:
    """Found by a tester: the service's build log showed `LABEL "org.orch.home"="/tmp/..."`, the
    server's data directory, which an environment's build log shows as "…"."""
    home = str(platform.config.home)
    svc = deployed(api, platform, tmp_path)
    assert svc["deployment"]["status"] == "ready", svc
    for log in (svc["deployment"]["log_tail"], api.get("/v1/services/web/deployments/1").json()["log_tail"]):
        assert f'LABEL "{HOME_LABEL}"="…"' in log and home not in log, log
        assert 'LABEL "org.orch.kind"="service"' in log  # the other labels say what they are
