"""An image two workspaces share through the build cache: each sees its own, nothing of the
other's (docs/environments.md, "Build cache")."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from orch.engine.fake import FakeEngine
from orch.services import workspaces
from orch.services.platform import Platform
from tests.api.conftest import client_of
from tests.api.test_environments import GOOD, create
from tests.conftest import drain


def test_a_hit_on_another_workspaces_build_shows_nothing_of_it(
    api: httpx.Client, app: FastAPI, platform: Platform, fake_engine: FakeEngine
) -> None:
    """Found by a tester: B's environment's `image` was the tag of A's build, `...-bld_A`."""
    create(api, "alpha-env")
    drain(platform)
    theirs = api.get("/v1/environments/alpha-env").json()
    a_build = theirs["build_id"]
    assert theirs["image"].endswith(f"-{a_build}") and theirs["build"]["image"] == theirs["image"]
    with platform.store.session() as s:
        _, other = workspaces.create_workspace(s, "beta")
    with client_of(app, other) as beta:
        hit = create(beta, "beta-env")
        assert hit["cache"] == "hit" and hit["status"] == "ready"
        for view in (hit, beta.get("/v1/environments/beta-env").json()):
            assert a_build not in view["image"] and a_build not in view["build"]["image"], view
            assert view["image"] == theirs["image"].removesuffix(f"-{a_build}")  # what it holds
            assert view["cache_reason"] == "same Dockerfile as an earlier build"
        listed = {e["name"]: e for e in beta.get("/v1/environments").json()}
        assert a_build not in listed["beta-env"]["image"]
        page = beta.get("/ui/environments/beta-env", headers={"Cookie": f"orch_token={other}"}).text
        assert a_build not in page
        # One image still: the hit builds nothing, and runs what A built.
        assert len(fake_engine.builds) == 1
    # A's own view, and a hit within one workspace, still show the build's tag whole.
    assert api.get("/v1/environments/alpha-env").json()["image"] == theirs["image"]
    same = create(api, "alpha-two", GOOD)
    assert (same["cache"], same["image"], same["build"]["image"]) == ("hit", theirs["image"], theirs["image"])
