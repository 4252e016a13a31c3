"""Images through a real OCI registry: Debian's docker-registry on 127.0.0.1, real Podman.

An image pushed here is pulled by its digest into a second, separate Podman storage (its own
--root, --runroot and --tmpdir: another machine, as far as images go) and runs there; a build
through a platform with ORCH_REGISTRY set records the digest the registry gave."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orch import config
from orch.builder import base_images, registry
from orch.engine import PodmanEngine
from orch.engine.base import BuildRequest
from orch.engine.network import Network
from orch.errors import EngineError
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INSTANCE = "registrytest"  # the label tests/cleanup.py and this module's cleanup look for
MANIFESTS = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def registry_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry serving a temporary storage root on 127.0.0.1 (plain HTTP), for
    this module; stopped by its PID and its files removed afterwards."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("Debian's docker-registry is not installed: run scripts/setup --dev.")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    settings = root / "config.yml"
    settings.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "serve", str(settings)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"docker-registry exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                # trust_env=False: the host's proxy variables must not send a loopback call away.
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not answer in 20 s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A small image on the local base image `rootfs`: one layer with a marker file, labelled so
    that tests/cleanup.py removes it if this run is killed; removed here afterwards."""
    home = tmp_path_factory.mktemp("home")
    engine = PodmanEngine()
    tag = f"localhost/orch-registrytest/tiny:{home.name}"
    request = BuildRequest(
        containerfile=f"FROM {base_images.image_tag('rootfs')}\nRUN echo came-through > /marker\n",
        tag=tag,
        labels={"org.orch.instance": INSTANCE, "org.orch.home": str(home)},
        network=Network.NONE,
    )
    engine.build(request, lambda line: None)
    try:
        yield tag
    finally:
        engine.remove_image(tag)


@pytest.fixture
def other_machine(tmp_path: Path) -> Iterator[PodmanEngine]:
    """The Podman engine of a separate, empty image storage on this machine (as a second machine
    has): `podman --root --runroot --tmpdir` of its own, through a one-line wrapper. Emptied,
    unmounted and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="orch-regtest-"))  # short: Podman refuses a runroot of 50+
    for part in ("root", "runroot", "tmp"):
        (base / part).mkdir()
    wrapper = tmp_path / "podman-other"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec podman --root {base / "root"} --runroot {base / "runroot"} --tmpdir {base / "tmp"} "$@"\n'
    )
    wrapper.chmod(0o755)
    try:
        yield PodmanEngine(binary=str(wrapper))
    finally:
        subprocess.run([str(wrapper), "rm", "-a", "-f"], capture_output=True, check=False)
        subprocess.run([str(wrapper), "rmi", "-a", "-f"], capture_output=True, check=False)
        # The overlay driver bind-mounts its own directory (and any image it mounted): unmount
        # everything under the storage, deepest first, before removing it.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(str(base))), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def settings(registry_address: str, tmp_path: Path) -> config.Config:
    return config.load(tmp_path, environ={}).with_values(registry=registry_address, registry_tls_verify=False)


def test_pushed_image_is_pulled_by_digest_elsewhere_and_runs(
    registry_address: str, tiny_image: str, other_machine: PodmanEngine, tmp_path: Path
) -> None:
    engine = PodmanEngine()
    cfg = settings(registry_address, tmp_path)
    built = engine.inspect_image(tiny_image)
    assert built is not None

    digest_ref = registry.push(engine, cfg, tiny_image)
    repository = f"{registry_address}/orch-registrytest/tiny"
    assert digest_ref is not None and re.fullmatch(
        re.escape(repository) + r"@sha256:[0-9a-f]{64}", digest_ref
    )
    # The registry holds that manifest under that digest.
    digest = digest_ref.split("@", 1)[1]
    answer = httpx.get(
        f"http://{registry_address}/v2/orch-registrytest/tiny/manifests/{digest}",
        headers={"Accept": MANIFESTS},
        trust_env=False,
    )
    assert answer.status_code == 200 and answer.headers["Docker-Content-Digest"] == digest

    # The other storage has nothing: the image can only come through the registry.
    assert other_machine.inspect_image(tiny_image) is None
    assert other_machine.images({}) == []
    pulled = registry.ensure_image(other_machine, cfg, tiny_image, digest_ref)
    assert pulled.id == built.id  # the same image, byte for byte (its id is its config's digest)
    assert tiny_image in pulled.tags
    shown = subprocess.run(
        [other_machine.binary, "image", "inspect", "--format", "{{.Digest}}", tiny_image],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == digest
    # Present now: nothing to pull, so no digest is needed.
    assert registry.ensure_image(other_machine, cfg, tiny_image, None).id == built.id

    ran = other_machine.run(tiny_image, ["cat", "/marker"], labels={"org.orch.instance": INSTANCE})
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.strip() == "came-through"


def test_a_registry_that_does_not_answer_is_a_plain_error(tiny_image: str, tmp_path: Path) -> None:
    cfg = settings(f"127.0.0.1:{free_port()}", tmp_path)  # nothing listens there
    with pytest.raises(EngineError) as caught:
        registry.push(PodmanEngine(), cfg, tiny_image)
    assert caught.value.message.startswith(f"podman push of {tiny_image} to {cfg.registry}/")
    # One sentence: Podman's last error, not the warnings of its three retries.
    assert caught.value.message.endswith(
        f"failed: the registry at {cfg.registry} could not be reached (connection refused)."
    )
    assert "ORCH_REGISTRY" in caught.value.fix
    with pytest.raises(EngineError, match=r"podman pull of .* could not be reached \(connection refused\)\."):
        PodmanEngine().pull_image(f"{cfg.registry}/x/y@sha256:{'0' * 64}", "localhost/x/y:1", False)


def test_a_platform_build_records_the_digest(make_server, registry_address: str, tmp_path: Path) -> None:
    server: Server = make_server()
    server.settings = {"ORCH_REGISTRY": registry_address, "ORCH_REGISTRY_TLS_VERIFY": "false"}
    server.start()
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM e2bdev/code-interpreter:latest\nRUN echo pushed > /opt/marker\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "pushed", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    env = server.get("/v1/environments/pushed")
    assert env["status"] == "ready", env
    repository = f"{registry_address}/orch-env/{server.instance}"
    assert re.fullmatch(re.escape(repository) + r"@sha256:[0-9a-f]{64}", env["image_digest"] or ""), env
    assert env["build"]["image_digest"] == env["image_digest"]
    # What the store holds, as another server of the same store would read it.
    from orch.store import Store
    from orch.store.schema import BuildRow, EnvironmentRow

    store = Store(config.load(server.home, environ={}).database_url)
    try:
        with store.session() as s:
            row = s.get(EnvironmentRow, env["id"])
            build = s.get(BuildRow, env["build_id"])
            assert row is not None and build is not None
            assert row.image_digest == build.image_digest == env["image_digest"]
    finally:
        store.dispose()
    # And the registry has it under that digest.
    digest = env["image_digest"].split("@", 1)[1]
    answer = httpx.get(
        f"http://{registry_address}/v2/orch-env/{server.instance}/manifests/{digest}",
        headers={"Accept": MANIFESTS},
        trust_env=False,
    )
    assert answer.status_code == 200
    log = server.get(f"/v1/environments/{env['id']}/logs")["text"]
    assert f"Pushed {env['image_digest']}" in log
    status = json.loads(server.cli("env", "status", "pushed", "--json").stdout)
    assert status["image_digest"] == env["image_digest"]
    assert f"digest   {env['image_digest']}" in server.cli("env", "status", "pushed").stdout
