"""An environment shown while its build becomes ready is shown as one moment of the store saw it:
ready with the build's image and registry digest, never ready without them.

On PostgreSQL a transaction's statements each see what was committed when they began (READ
COMMITTED; on SQLite, Python's driver begins no transaction for reads at all), so the
environment's row and its build's, read one after the other, could come from either side of the
build's commit: the environment from before (no image, no digest), the build
from after (ready). A cluster's server answered `ready` with no image digest, and another node
had nothing to pull (found in tests/integration/test_cluster.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store.schema import BuildRow, EnvironmentRow
from tests.conftest import drain

REGISTRY = "127.0.0.1:5000"
DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo built > /built\n"


def test_an_environment_read_across_its_build_s_commit_is_ready_only_with_its_digest(
    api: httpx.Client,
    platform: Platform,
    workspace: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    platform.config = platform.config.with_values(registry=REGISTRY, registry_tls_verify=False)
    made = api.post("/v1/environments", json={"name": "tools", "dockerfile": DOCKERFILE})
    assert made.status_code == 201 and made.json()["status"] == "queued", made.text

    resolve = envs.resolve
    built: list[int] = []

    def resolve_then_build(*args: Any, **kwargs: Any) -> EnvironmentRow:
        """The environment's row is read; then, before its build's row is, a node's worker
        finishes the build and commits (in sessions of its own)."""
        env = resolve(*args, **kwargs)
        if not built:
            built.append(drain(platform))
        return env

    monkeypatch.setattr(envs, "resolve", resolve_then_build)
    shown = api.get("/v1/environments/tools").json()
    monkeypatch.undo()
    assert built == [1]

    with platform.store.session() as s:
        env = s.get(EnvironmentRow, shown["id"])
        assert env is not None and env.build_id == shown["build_id"]
        build = s.get(BuildRow, env.build_id)
        assert build is not None and build.status == "ready"
        image, digest = env.image, env.image_digest
    assert digest and digest.startswith(f"{REGISTRY}/") and image, (image, digest)
    # As the build's commit left it, or as it was before that commit: not half of each.
    before = {"status": "queued", "image": None, "image_digest": None}
    after = {"status": "ready", "image": image, "image_digest": digest}
    seen = {k: shown[k] for k in before}
    assert seen in (before, after), shown
    # And read again, afterwards: ready, with what another node pulls.
    again = api.get("/v1/environments/tools").json()
    assert {k: again[k] for k in after} == after, again
