"""What Podman starts for a workspace, its services' containers and its builds' steps, gets the
sandboxes' seccomp rules (sandbox/seccomp.py), not Podman's default: no kernel keyring, whose
user keyrings are the uid's across the machine (a service as uid 1000 shared them with every
run; a build step or a service's `run_command`, as root, with the host's root), and no new user
namespace. Each is checked against a `podman run` with Podman's default, which allows both."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.builder import base_images
from orch.engine import PodmanEngine
from orch.engine.base import BuildRequest, ContainerSpec
from orch.engine.network import Network

pytestmark = pytest.mark.integration

PREFIX = "orch-seccomptest-"
OWNER = "enginetest-seccomp"
TAG = "localhost/orch-enginetest/seccomp:1"

# keyctl(JOIN_SESSION_KEYRING, name), then unshare(CLONE_NEWUSER) in a child; one JSON line.
PROBE = (
    "import ctypes, json, os, platform\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "keyctl = {'x86_64': 250, 'aarch64': 219}[platform.machine()]\n"
    "joined = libc.syscall(keyctl, 1, b'orch-seccomptest')\n"
    "said = {'keyctl': 'done' if joined >= 0 else os.strerror(ctypes.get_errno())}\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os._exit(0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno())\n"
    "code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
    "said['unshare'] = 'done' if code == 0 else os.strerror(code)\n"
    "print('probe ' + json.dumps(said, sort_keys=True), flush=True)\n"
)
REFUSED = {"keyctl": "Function not implemented", "unshare": "Operation not permitted"}


def probed(output: str) -> dict[str, str]:
    line = next(x for x in output.splitlines() if "probe {" in x)
    return json.loads(line[line.index("probe ") + len("probe ") :])  # type: ignore[no-any-return]


@pytest.fixture
def engine() -> Iterator[PodmanEngine]:
    engine = PodmanEngine()
    yield engine
    subprocess.run(["podman", "rm", "-f", f"{PREFIX}service"], capture_output=True, check=False)
    engine.remove_build_leftovers(OWNER)
    engine.remove_image(TAG)


def test_podmans_default_allows_both() -> None:
    """What the rules change: the same probe under `podman run`'s own default profile."""
    image = base_images.image_tag("python")
    done = subprocess.run(
        ["podman", "run", "--rm", "--user=1000:1000", "--network=none", image, "python3", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert probed(done.stdout) == {"keyctl": "done", "unshare": "done"}


def test_a_services_container_gets_the_sandboxes_rules(engine: PodmanEngine, tmp_path: Path) -> None:
    spec = ContainerSpec(
        image=base_images.image_tag("python"),
        argv=["python3", "-c", PROBE],
        name=f"{PREFIX}service",
        labels={},
        user="1000:1000",
        memory_bytes=64 << 20,
        pids=16,
        network=Network.NONE,
    )
    engine.start_container(spec, tmp_path / "service.log", 1 << 20)
    subprocess.run(["podman", "wait", spec.name], capture_output=True, timeout=120, check=True)
    assert probed((tmp_path / "service.log").read_text()) == REFUSED


def test_a_builds_steps_get_the_sandboxes_rules(engine: PodmanEngine) -> None:
    """A step runs as root: a keyring call there reached the host root's user keyring."""
    lines: list[str] = []
    request = BuildRequest(
        containerfile=f"FROM {base_images.image_tag('python')}\nRUN {json.dumps(['python3', '-c', PROBE])}\n",
        tag=TAG,
        no_cache=True,
        owner=OWNER,
        timeout=300,
        network=Network.NONE,
    )
    engine.build(request, lines.append)
    assert probed("\n".join(lines)) == REFUSED
