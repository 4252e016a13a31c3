"""RUN --mount=type=cache: the Containerfile never carries the user's id (a host directory to
Buildah), only its owner's (docs/environments.md, "Cache mounts")."""

from __future__ import annotations

import dockerfile
import pytest

from orch.dockerfile import cache_owner, render_containerfile, uses_cache, validate
from orch.dockerfile.cache_mounts import private
from tests.unit.dockerfile.support import BASE

ONE = cache_owner("instance1", "ws_one")
TWO = cache_owner("instance1", "ws_two")


def mount_of(text: str, owner: str) -> str:
    v = validate(BASE + text)
    assert v.ok, v.findings
    [_, run] = dockerfile.parse_string(render_containerfile(v.instructions, "localhost/base:1", owner))
    [flag] = run.flags
    return str(flag)


def fields(flag: str) -> dict[str, str]:
    return dict(f.partition("=")[::2] for f in flag.removeprefix("--mount=").split(","))


def test_the_id_is_the_owners_and_names_no_host_path() -> None:
    """`id=../../../etc` made Buildah mount the host's /etc, read-write, into the step."""
    flag = mount_of("RUN --mount=type=cache,target=/c,id=../../../etc ls /c\n", ONE)
    got = fields(flag)
    assert got["id"].startswith(f"orch-{ONE}-") and "/" not in got["id"] and ".." not in got["id"]
    assert got["target"] == "/c" and got["type"] == "cache"
    assert flag.count("id=") == 1


def test_workspaces_never_share_a_cache_and_a_workspace_keeps_its_own() -> None:
    text = "RUN --mount=type=cache,target=/root/.cache/pip pip install six\n"
    assert fields(mount_of(text, ONE))["id"] != fields(mount_of(text, TWO))["id"]
    assert fields(mount_of(text, ONE))["id"] == fields(mount_of(text, ONE))["id"]
    # Within a workspace, what the user's ids share stays shared: by id, else by target.
    by_id = "RUN --mount=type=cache,target=/a,id=pip ls\n"
    assert fields(mount_of(by_id, ONE))["id"] == fields(mount_of(by_id.replace("/a", "/b"), ONE))["id"]
    by_target = "RUN --mount=type=cache,target=/root/.cache/pip/ ls\n"
    assert fields(mount_of(by_target, ONE))["id"] == fields(mount_of(text, ONE))["id"]
    assert cache_owner("instance2", "ws_one") != ONE  # another platform on the machine


@pytest.mark.parametrize(
    "flag",
    [
        # As Buildah reads the value: split at every comma, the last id wins.
        "--mount=type=cache,target=/c,id=a,id=../../etc",
        "--mount=type=cache,target=/c, id=../../etc",
        "--mount=type=cache,target=/c,from=other,source=/etc",
        "--mount=type=tmpfs,target=/c,id=../../etc",
    ],
)
def test_every_id_and_from_buildah_would_read_goes(flag: str) -> None:
    out = private(flag, ONE)
    ids = [f for f in out.removeprefix("--mount=").split(",") if f.partition("=")[0].strip() == "id"]
    assert ids == [f"id={fields(out)['id']}"] and fields(out)["id"].startswith(f"orch-{ONE}-")
    assert "from=" not in out and "../" not in out


def test_other_flags_and_tmpfs_mounts_are_left_as_they_are() -> None:
    assert private("--mount=type=tmpfs,target=/t", ONE) == "--mount=type=tmpfs,target=/t"
    sharing = private("--mount=type=cache,target=/c,sharing=locked,uid=1000", ONE)
    assert sharing.startswith("--mount=type=cache,target=/c,sharing=locked,uid=1000,id=orch-")


def test_uses_cache() -> None:
    assert uses_cache(validate(BASE + "RUN --mount=type=cache,target=/c ls\n").instructions)
    assert not uses_cache(validate(BASE + "RUN --mount=type=tmpfs,target=/c ls\n").instructions)
    assert not uses_cache(validate(BASE + "RUN ls\n").instructions)
