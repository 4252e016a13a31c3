"""A run's (and a service's) dependencies come first on PYTHONPATH, before what the image's own
ENV sets there, rather than replacing it (found by a tester: an environment's Dockerfile with
`ENV PYTHONPATH=/opt/lib` lost its modules as soon as the agent had a requirements.txt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.engine.base import ContainerSpec
from orch.engine.fake import FakeEngine
from orch.sandbox import deps, deps_cache, oci
from orch.sandbox.layout import PYTHON_DEPS, WORKDIR
from orch.sandbox.service_spec import containerfile
from orch.sandbox.spec import Limits, run_spec

IMAGE_ENV = ("PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8")


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[deps.Deps]:
    """The run's dependencies as `ensure` finds them in the cache: requirements.txt and package.json."""
    files = {"requirements.txt": b"six\n", "package.json": b"{}"}
    key = deps.cache_key(files, "img1", workspace_id="ws_a", bundle_sha="b1")
    entry = tmp_path / "cache" / key
    (entry / "python").mkdir(parents=True)
    (entry / "node" / "node_modules").mkdir(parents=True)
    deps_cache.mark_complete(entry, "package.json, requirements.txt", 4096)
    found = deps.ensure(
        FakeEngine(),
        cache_root=tmp_path / "cache",
        image="img",
        image_id="img1",
        bundle_dir=tmp_path / "bundle",
        dep_files=files,
        base_spec=ContainerSpec(image="img", argv=[], name="orch-x-run_1", labels={}),
        log=lambda line: None,
        timeout=30,
        workspace_id="ws_a",
        bundle_sha="b1",
    )
    assert found.status == "cached"
    yield found
    found.release()


def sandbox_env(
    found: deps.Deps, image_env: tuple[str, ...], env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a run with `found` in an image whose ENV is `image_env`."""
    spec = run_spec(
        name="orch-x-run_1",
        image="img",
        command=["python", "main.py"],
        bundle_dir=Path("/data/bundle"),
        deps=found,
        env=env or {},
        stdin=b"",
        limits=Limits(cpus=0.5, memory_bytes=128 * 1024 * 1024, pids=64, timeout=30),
        network=False,
        labels={},
    )
    layout = oci.Layout(root=Path("/r"), hostname="h", cgroups_path="/c/c", image_env=image_env)
    return dict(e.split("=", 1) for e in oci.environment(spec, layout))


def test_the_dependencies_come_before_the_images_own_pythonpath(cached: deps.Deps) -> None:
    env = sandbox_env(cached, (*IMAGE_ENV, "PYTHONPATH=/opt/lib:/opt/more"))
    assert env["PYTHONPATH"] == f"{PYTHON_DEPS}:/opt/lib:/opt/more"


@pytest.mark.parametrize("image_env", [IMAGE_ENV, (*IMAGE_ENV, "PYTHONPATH=")])
def test_an_image_without_a_pythonpath_gets_the_dependencies_alone(
    cached: deps.Deps, image_env: tuple[str, ...]
) -> None:
    assert sandbox_env(cached, image_env)["PYTHONPATH"] == PYTHON_DEPS


@pytest.mark.parametrize("image_env", [IMAGE_ENV, (*IMAGE_ENV, "PYTHONPATH=/opt/lib")])
def test_a_runs_own_pythonpath_comes_after_the_dependencies(
    cached: deps.Deps, image_env: tuple[str, ...]
) -> None:
    """An agent's own `env: {PYTHONPATH: ...}` (or `--env`) is kept after the dependencies and,
    as Podman has it, replaces the image's."""
    env = sandbox_env(cached, image_env, {"PYTHONPATH": "/work/lib:/work/more"})
    assert env["PYTHONPATH"] == f"{PYTHON_DEPS}:/work/lib:/work/more"
    assert sandbox_env(cached, image_env, {"PYTHONPATH": ""})["PYTHONPATH"].startswith(PYTHON_DEPS)


def test_without_dependencies_the_images_pythonpath_and_a_runs_own_stay_as_podman_has_them() -> None:
    image_env = (*IMAGE_ENV, "PYTHONPATH=/opt/lib")
    assert sandbox_env(deps.Deps("none"), image_env)["PYTHONPATH"] == "/opt/lib"
    assert sandbox_env(deps.Deps("none"), image_env, {"PYTHONPATH": "/mine"})["PYTHONPATH"] == "/mine"


def test_node_packages_and_path_leave_what_the_image_sets(cached: deps.Deps) -> None:
    image_env = ("PATH=/opt/node/bin:/usr/bin", "NODE_PATH=/opt/node_lib")
    env = sandbox_env(cached, image_env)
    assert env["PATH"] == "/opt/node/bin:/usr/bin" and env["NODE_PATH"] == "/opt/node_lib"
    assert f"{WORKDIR}/node_modules" in {m.container for m in cached.mounts}


def test_a_services_image_keeps_its_base_images_pythonpath_after_the_dependencies() -> None:
    text = containerfile("localhost/env:1", ["requirements.txt", "package.json"], own_dockerfile=True)
    # Podman expands it at build time: /opt/orch/deps/python:/opt/lib under ENV PYTHONPATH=/opt/lib,
    # /opt/orch/deps/python alone where the base image sets none (or an empty one).
    assert f"ENV PYTHONPATH={PYTHON_DEPS}${{PYTHONPATH:+:$PYTHONPATH}}\n" in text
    assert "NODE_PATH" not in text and "ENV PATH" not in text
