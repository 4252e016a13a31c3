"""An environment's delete removes its image at once when only the runc launcher's hold kept it
(docs/environments.md, "Deleting"), on real Podman and runc. Found by a tester: after a sandbox
had ended, `orch env delete` took only the image's name; the image, its layers and the launcher's
holder stayed on an idle server until some other sandbox ended, and a stop removed the holder
but not the image."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orch.builder import base_images
from orch.engine import PodmanEngine
from orch.engine.base import ContainerExit, ContainerSpec
from orch.models import EnvKind, new_id
from orch.sandbox.launcher import Isolation
from orch.sandbox.runc import Launcher
from orch.services import environments, images, workspaces
from orch.services.platform import Platform
from orch.store.schema import EnvironmentRow
from tests.conftest import close_platform, copy_sqlite, make_platform

pytestmark = pytest.mark.integration

PREFIX = f"orch-imagegc{os.getpid()}-"


@dataclasses.dataclass
class Env:
    platform: Platform
    launcher: Launcher
    ws_id: str
    tag: str  # the environment's image, as a build names it
    image_id: str


@pytest.fixture
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Env]:
    """A platform on real Podman whose runc launcher has no sandbox yet, and a custom
    environment `tiny` of its own image (the python base plus /tmp/tiny, labelled as the
    platform's as a build's is)."""
    db = tmp_path / "home" / "orch.db"
    copy_sqlite(request.getfixturevalue("sqlite_template"), db)
    platform = make_platform(tmp_path / "home", PodmanEngine(), database_url=f"sqlite:///{db}")
    launcher = Launcher(prefix=PREFIX, pool_size=0)
    platform.launchers = {Isolation.RUNC: launcher}
    label = f"org.orch.instance={platform.instance}"
    tag = f"localhost/orch-env/{platform.instance}:tiny"
    maker = f"{PREFIX}make"
    base = base_images.image_tag("python")
    try:
        podman("run", "--name", maker, base, "sh", "-c", "echo tiny > /tmp/tiny")
        image_id = podman("commit", "-q", "--change", f"LABEL {label}", maker, tag)
        podman("rm", "-f", maker)
        with platform.store.session() as s:
            ws, _token = workspaces.create_workspace(s, "team")
            s.add(
                EnvironmentRow(
                    id=new_id("env"),
                    scope=ws.id,
                    name="tiny",
                    kind=EnvKind.CUSTOM.value,
                    dockerfile=f"FROM {base}\nRUN echo tiny > /tmp/tiny\n",
                    image=tag,
                )
            )
            ws_id = ws.id
        yield Env(platform, launcher, ws_id, tag, image_id)
    finally:
        launcher.close()
        launcher.sweep(PREFIX)
        subprocess.run(["podman", "rm", "-f", maker], capture_output=True, check=False)
        listed = podman("images", "-a", "-q", "--no-trunc", "--filter", f"label={label}")
        if listed.split():
            subprocess.run(["podman", "rmi", "-f", *listed.split()], capture_output=True, check=False)
        close_platform(platform)


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout.strip()


def image_exists(image_id: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image_id], check=False).returncode == 0


def holders() -> list[str]:
    return podman("ps", "-a", "--filter", f"name=^{PREFIX}hold-", "--format", "{{.Names}}").split()


def cat_tiny(env: Env, on_exit: Callable[[ContainerExit], None] | None = None, image: str = "") -> str:
    """`cat /tmp/tiny` in a sandbox of the environment's image (or `image`); `on_exit` runs as
    it has ended, before its teardown (while the sandbox still uses the image)."""
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    argv = ["cat", "/tmp/tiny"] if not image else ["true"]
    spec = ContainerSpec(image=image or env.tag, argv=argv, name=name, labels={}, user="1000:1000")
    out: list[bytes] = []
    result = env.launcher.run_container(spec, out.append, out.append, 60, None, on_exit)
    assert result.exit_code == 0, out
    return b"".join(out).decode().strip()


def test_a_delete_after_the_last_sandbox_removes_the_image_and_its_holder(env: Env) -> None:
    assert cat_tiny(env) == "tiny"
    assert image_exists(env.image_id) and holders() == [f"{PREFIX}hold-runc-{env.image_id[:12]}"]
    environments.delete(env.platform, env.ws_id, "tiny")
    assert not image_exists(env.image_id) and holders() == []


def test_a_delete_while_a_sandbox_uses_the_image_removes_it_when_the_sandbox_ends(env: Env) -> None:
    seen: list[bool] = []

    def delete_now(_result: ContainerExit) -> None:
        environments.delete(env.platform, env.ws_id, "tiny")
        seen.append(image_exists(env.image_id))

    assert cat_tiny(env, on_exit=delete_now) == "tiny"
    assert seen == [True]  # under the sandbox, the image stayed
    env.launcher.wait()  # its removal after the teardown runs in the background
    assert not image_exists(env.image_id)
    assert not any(env.image_id[:12] in h for h in holders())


def test_a_stop_under_a_sandbox_leaves_the_image_to_the_next_start(env: Env) -> None:
    """The stop removes the holders; the image that lost its name goes at the next start."""

    def delete_and_stop(_result: ContainerExit) -> None:
        environments.delete(env.platform, env.ws_id, "tiny")
        env.launcher.close()

    cat_tiny(env, on_exit=delete_and_stop)
    env.launcher.wait()
    assert holders() == [] and image_exists(env.image_id)
    images.remove_unnamed(env.platform)  # the next start's, before anything runs
    assert not image_exists(env.image_id)


def test_a_killed_servers_holds_go_with_their_images_at_the_next_start(env: Env) -> None:
    """The delete took the name, and the server was killed before it let go: the next start's
    sweep removes the holders, and the images they held that have no name."""
    cat_tiny(env)
    cat_tiny(env, image=base_images.image_tag("python"))  # held too, and named
    env.platform.engine.untag_image(env.tag)  # as images.release, refused by the holder
    assert image_exists(env.image_id) and len(holders()) == 2
    Launcher(prefix=PREFIX, pool_size=0).sweep(PREFIX)  # the next start's launcher
    assert holders() == [] and not image_exists(env.image_id)
    assert image_exists(base_images.image_tag("python"))  # a held image with a name stays


def waiting(launcher: Launcher) -> list[str]:
    """The sandboxes `launcher` started ahead of need, by their bundles (one that waits has not
    been made in the runtime yet: its helper makes it at the handover)."""
    return [p.name for p in (launcher.state / "sandboxes").glob(f"{PREFIX}warm-*")]


def test_a_delete_removes_the_warm_sandbox_waiting_for_the_image_and_then_the_image(env: Env) -> None:
    """A sandbox started ahead of need for the environment's next run held its image until it
    was thrown away (idle for minutes): the delete removes it, and the image with it."""
    env.launcher.close()
    warm = Launcher(prefix=PREFIX, pool_size=0, warm=1)
    env.platform.launchers = {Isolation.RUNC: warm}
    try:
        assert cat_tiny(dataclasses.replace(env, launcher=warm)) == "tiny"
        warm.wait()  # the next run's sandbox is waiting, on the image
        assert waiting(warm) and image_exists(env.image_id)
        environments.delete(env.platform, env.ws_id, "tiny")
        assert waiting(warm) == [] and not image_exists(env.image_id) and holders() == []
    finally:
        warm.close()
        warm.sweep(PREFIX)
