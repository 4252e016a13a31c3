"""The runc launcher on the real machine: what tests/security/test_hostile.py proves for Podman
runs, proved for sandboxes that runc starts directly. After each test nothing of it is left:
no runtime state, mounts, cgroups, network namespaces or address reservations."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orch import config
from orch.builder import base_images
from orch.builder.host import IMAGE_CA_PATH
from orch.engine import PodmanEngine
from orch.engine.base import ContainerExit, ContainerSpec, Mount
from orch.engine.network import Network
from orch.engine.podman_run import cgroup_parents
from orch.sandbox import cni, rootfs
from orch.sandbox.netns import NETNS_DIR, Netns
from orch.sandbox.pump import Pump
from orch.sandbox.runc import Launcher
from tests.host_listener import Listener, host_address

# What a service's run_command keeps (orch.sandbox service spec): caps a root process gets.
RUN_COMMAND_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID")

pytestmark = pytest.mark.integration

PREFIX = f"orch-runctest{os.getpid()}-"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    # scripts/setup installs both: their absence fails the suite, it is never skipped.
    assert shutil.which("runc"), "runc is not installed: run scripts/setup"
    image = base_images.image_tag("python")
    exists = subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0
    assert exists, f"{image} is missing: run scripts/setup (it builds the base images)"
    PodmanEngine().prepare()  # the sandbox network and its isolation rules
    # No pool: each sandbox's namespace is made for it, so "nothing left" is exact.
    launched = Launcher(prefix=PREFIX, pool_size=0)
    yield launched
    launched.close()
    launched.sweep(PREFIX)


def leftovers(launcher: Launcher, prefix: str = PREFIX) -> dict[str, object]:
    sandboxes = launcher.state / "sandboxes"
    found = {
        "runtime": launcher.containers(prefix),
        "bundles": sorted(p.name for p in sandboxes.glob(f"{prefix}*")) if sandboxes.is_dir() else [],
        # Only this test's: other platforms on the machine may be running sandboxes right now.
        "mounts": [
            m for m in rootfs.mounts_under(sandboxes) if m.relative_to(sandboxes).parts[0].startswith(prefix)
        ]
        if sandboxes.is_dir()
        else [],
        "cgroups": sorted(cgroup_parents(prefix)),
        "netns": sorted(p.name for p in NETNS_DIR.glob(f"{prefix}*")) if NETNS_DIR.is_dir() else [],
        "netns state": sorted(p.name for p in (launcher.state / "netns").glob(f"{prefix}*")),
        "addresses": cni.reservations(cni.load("orch-sandbox"), prefix),
    }
    return {k: v for k, v in found.items() if v}


@pytest.fixture(autouse=True)
def nothing_left(launcher: Launcher) -> Iterator[None]:
    yield
    launcher.wait()  # used namespaces are destroyed in the background
    assert leftovers(launcher) == {}


def run(
    launcher: Launcher,
    argv: list[str],
    *,
    stdin: bytes = b"",
    timeout: float | None = 60,
    should_stop: object = None,
    **kw: object,
) -> tuple[ContainerExit, str, str]:
    settings: dict[str, object] = {
        "user": "1000:1000",
        "memory_bytes": 256 * MiB,
        "pids": 128,
        "tmpfs": {"/tmp": "rw,exec,nosuid,nodev,mode=1777,size=16m"},
        **kw,
    }
    spec = ContainerSpec(
        image=str(settings.pop("image", base_images.image_tag("python"))),
        argv=argv,
        name=f"{PREFIX}{uuid.uuid4().hex[:8]}",
        labels={},
        stdin=stdin,
        **settings,  # type: ignore[arg-type]
    )
    out: list[bytes] = []
    err: list[bytes] = []
    result = launcher.run_container(spec, out.append, err.append, timeout, should_stop)  # type: ignore[arg-type]
    return result, b"".join(out).decode(), b"".join(err).decode()


def py(code: str) -> list[str]:
    return ["python3", "-c", code]


def test_hello_world_reads_stdin_and_writes_stdout(launcher: Launcher) -> None:
    result, out, err = run(launcher, py("import sys; print(sys.stdin.read().upper())"), stdin=b"hello")
    assert (result, out, err) == (ContainerExit(0), "HELLO\n", "")


def test_exit_codes(launcher: Launcher) -> None:
    assert run(launcher, ["sh", "-c", "exit 3"])[0] == ContainerExit(3)
    # A SIGKILL that is not the memory limit's: 137, and no OOM reported.
    assert run(launcher, ["sh", "-c", "kill -9 $$"])[0] == ContainerExit(137)
    # catatonit cannot run the command: its own error, as under `podman run --init`.
    result, _, err = run(launcher, ["no-such-command"])
    assert result.exit_code == 1 and "failed to exec" in err


def test_the_runtimes_own_failure_is_125(launcher: Launcher) -> None:
    # A bind mount of a host path that does not exist: the sandbox never starts.
    result, _, err = run(launcher, ["true"], mounts=[Mount("/nonexistent/orch-test", "/x")])
    assert result.exit_code == 125, err


def test_memory_limit_ends_in_an_oom_kill(launcher: Launcher) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    result, _, _ = run(launcher, py(code), memory_bytes=128 * MiB)
    assert result == ContainerExit(137, oom_killed=True)


def test_fork_bomb_stops_at_the_pids_limit(launcher: Launcher) -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print(n, e.errno)\n"
    )
    result, out, _ = run(launcher, py(code), pids=32, timeout=60)
    forked, errno_ = map(int, out.split())
    # sh, catatonit and python count too: the 32nd task cannot be made (EAGAIN).
    assert result.exit_code == 0 and errno_ == 11 and forked < 32


THREAD_BOMB = (
    "import threading, time\n"
    "while True:\n"
    "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_the_process_limit_is_told_by_the_cgroup(launcher: Launcher, runtime: str) -> None:
    """The process limit is read from the sandbox's cgroup, never guessed from its output: a
    thread it could not start is one (its error names no EAGAIN), an EAGAIN of its own is not.
    Under gVisor the agent's limit is its RLIMIT_NPROC, which gVisor's kernel enforces and no
    counter of the host's shows (its cgroup holds the Sentry's threads). A SIGKILL and an
    exit(137) come out alike from both runtimes (the init reports 128 + the signal)."""
    used = launcher if runtime == "runc" else Launcher(runtime="runsc", prefix=PREFIX, pool_size=0)
    try:
        result, _, err = run(used, py(THREAD_BOMB), pids=32)
        assert "can't start new thread" in err and "EAGAIN" not in err, err
        assert result == ContainerExit(1, pids_limit_reached=runtime == "runc")
        fetch = "echo 'HTTP fetch failed: EAGAIN' >&2; exit 2"
        assert run(used, ["sh", "-c", fetch], pids=32)[0] == ContainerExit(2)
        killed, exited = (run(used, ["sh", "-c", cmd], pids=32) for cmd in ("kill -9 $$", "exit 137"))
        assert killed == exited == (ContainerExit(137), "", "")
    finally:
        if used is not launcher:
            used.close()
            used.sweep(PREFIX)


@pytest.fixture
def runtime_ends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """How each runtime process the launcher followed ended: (why the sandbox was killed, how
    often the runtime was killed itself as one that hangs after a kill, `pump.KILL_GRACE` on).
    Which path ended a sandbox, seen without a clock."""
    ends: list[tuple[str, int]] = []
    follow = Pump.run

    def watched(
        self: Pump, deadline: float | None, should_stop: Callable[[], bool] | None, kill: Callable[[], None]
    ) -> str:
        hung = 0
        kill_runtime = self.proc.kill

        def counted() -> None:
            nonlocal hung
            hung += 1
            kill_runtime()

        monkeypatch.setattr(self.proc, "kill", counted)
        why = follow(self, deadline, should_stop, kill)
        ends.append((why, hung))
        return why

    monkeypatch.setattr(Pump, "run", watched)
    return ends


def test_timeout_kills_the_sandbox(launcher: Launcher, runtime_ends: list[tuple[str, int]]) -> None:
    result, _, _ = run(launcher, ["sleep", "600"], timeout=1)
    assert result.timed_out and not result.oom_killed and result.exit_code == 137
    # The sandbox ended at the kill, and runc with it: it was never killed as a runtime that hangs.
    assert runtime_ends == [("timeout", 0)]


def test_a_gvisor_sandbox_on_a_sliver_of_cpu_ends_at_its_timeout(
    launcher: Launcher, runtime_ends: list[tuple[str, int]]
) -> None:
    """runsc's kill goes through the sandbox's own kernel, which runs under the sandbox's CPU
    limit: at 0.01 CPU it took over 10 s, the runtime was killed, and the exit code was -9."""
    gvisor = Launcher(runtime="runsc", prefix=PREFIX, pool_size=0)
    try:
        result, _, _ = run(gvisor, py("while True: pass"), timeout=2, cpus=0.01)
        assert result.timed_out and result.exit_code == 137, result
        # The kill of its cgroup ended it (runsc's own process with it: the 137 is the launcher's
        # word for that SIGKILL), not the kill of a runtime that hangs, KILL_GRACE after runsc's.
        assert runtime_ends == [("timeout", 0)]
    finally:
        gvisor.close()
        gvisor.sweep(PREFIX)


def test_cancel_kills_the_sandbox(launcher: Launcher) -> None:
    asked = time.monotonic() + 0.5
    result, _, _ = run(launcher, ["sleep", "600"], should_stop=lambda: time.monotonic() > asked)
    assert result.cancelled and not result.timed_out


def test_host_files_are_read_only(launcher: Launcher, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").write_text("host\n")
    shared.chmod(0o777)
    code = (
        "import os\n"
        "hits = []\n"
        "for p in ('/data/new', '/data/data', '/etc/orch-evil', '/usr/orch-evil', '/orch-evil'):\n"
        "    try:\n"
        "        open(p, 'a').write('x'); hits.append(p)\n"
        "    except OSError as e:\n"
        "        pass\n"
        "print(len(hits), open('/data/data').read().strip())\n"
    )
    result, out, _ = run(launcher, py(code), mounts=[Mount(str(shared), "/data")])
    assert (result.exit_code, out) == (0, "0 host\n")
    assert sorted(p.name for p in shared.iterdir()) == ["data"]


def test_runs_as_uid_1000_with_no_capabilities_and_seccomp(launcher: Launcher) -> None:
    result, out, _ = run(
        launcher, ["sh", "-c", "id -u; id -g; grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status"]
    )
    lines = out.split("\n")
    assert result.exit_code == 0 and lines[:2] == ["1000", "1000"]
    fields = dict(line.split(":\t") for line in lines[2:] if line)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert fields[cap] == "0000000000000000", (cap, fields)
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"  # 2: a filter is loaded


def test_kernel_paths_are_masked_and_the_cgroup_is_private(launcher: Launcher) -> None:
    code = (
        "import os\n"
        "print(len(open('/proc/keys', 'rb').read(16)))\n"
        "try:\n"
        "    open('/proc/sys/kernel/hostname', 'w').write('x'); print('wrote')\n"
        "except OSError:\n"
        "    print('refused')\n"
        "print(sorted({l.split(':')[2].strip() for l in open('/proc/self/cgroup')}))\n"
        "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
    )
    result, out, _ = run(launcher, py(code))
    # /proc/keys reads as empty (masked); /proc/sys is read-only; a cgroup namespace shows "/" only;
    # its own pid namespace: catatonit and python.
    assert (result.exit_code, out) == (0, "0\nrefused\n['/']\n2\n")


def test_writable_root_home_owned_by_the_user_and_bounded(launcher: Launcher) -> None:
    before = shutil.disk_usage("/").used
    script = (
        "stat -c '%u:%g' /home/user; touch /home/user/f && echo home-ok; "
        "dd if=/dev/zero of=/home/user/big bs=1M 2>&1 | grep -o 'No space left on device'; "
        "df -m / | tail -1 | awk '{print $2}'"
    )
    result, out, _ = run(launcher, ["sh", "-c", script], read_only=False, memory_bytes=64 * MiB)
    size = out.split("\n")[3]
    assert result.exit_code == 0
    assert out.split("\n")[:3] == ["1000:1000", "home-ok", "No space left on device"]
    assert int(size) == 32  # the writable layer: half the memory limit
    assert shutil.disk_usage("/").used < before + 16 * MiB  # none of it on the host's disk


def test_a_root_disk_bomb_ends_with_enospc(launcher: Launcher) -> None:
    # A service's run_command runs as root with a writable root (apt-get): it is bounded too.
    script = "dd if=/dev/zero of=/big bs=1M 2>&1 | grep -o 'No space left on device'; echo done"
    result, out, _ = run(
        launcher,
        ["sh", "-c", script],
        user="0:0",
        cap_add=RUN_COMMAND_CAPS,
        read_only=False,
        memory_bytes=64 * MiB,
    )
    assert (result.exit_code, out) == (0, "No space left on device\ndone\n")


def test_writes_to_the_root_count_against_the_memory_limit(launcher: Launcher) -> None:
    """The writable layer's tmpfs is mounted on the host, but its pages are charged to the
    sandbox that writes them: 24 MiB written plus 48 MiB allocated exceed 64 MiB."""
    alloc = "python3 -c 'b = bytearray(48 << 20); print(\"allocated\")'"
    alone, out, _ = run(launcher, ["sh", "-c", alloc], read_only=False, memory_bytes=64 * MiB)
    assert (alone.exit_code, out) == (0, "allocated\n")
    both = f"dd if=/dev/zero of=/home/user/f bs=1M count=24 status=none; {alloc}"
    result, out, _ = run(launcher, ["sh", "-c", both], read_only=False, memory_bytes=64 * MiB)
    assert result == ContainerExit(137, oom_killed=True) and out == ""


def test_no_network_has_only_loopback(launcher: Launcher) -> None:
    result, out, _ = run(launcher, ["ls", "/sys/class/net"])
    assert (result.exit_code, out.split()) == (0, ["lo"])


PROBE = """
import json, socket, struct, sys
def gateway():
    for line in open('/proc/net/route').read().splitlines()[1:]:
        f = line.split()
        if f[1] == '00000000':
            return socket.inet_ntoa(struct.pack('<L', int(f[2], 16)))
port, *extra = sys.argv[1:]
hosts = list(dict.fromkeys(h for h in (gateway(), 'host.containers.internal', '127.0.0.1', *extra) if h))
connected = []
for host in hosts:
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(b'hello from a sandbox')
            connected.append(host)
    except OSError:
        pass
print(json.dumps({'tried': hosts, 'connected': connected}))
"""


def test_sandbox_network_reaches_nothing_on_the_host(launcher: Launcher) -> None:
    gateway = cni.load("orch-sandbox").plugins[0]["ipam"]["ranges"][0][0]["gateway"]
    everywhere = Listener("0.0.0.0")  # a host service on every address
    loopback = Listener("127.0.0.1")
    try:
        result, out, _ = run(
            launcher,
            ["python3", "-c", PROBE, str(everywhere.port), gateway, host_address()],
            network=Network.SANDBOX,
        )
        result2, out2, _ = run(
            launcher, ["python3", "-c", PROBE, str(loopback.port), gateway], network=Network.SANDBOX
        )
        # The control: both listeners do take a connection from the host itself.
        socket.create_connection(("127.0.0.1", everywhere.port), timeout=3).close()
        socket.create_connection(("127.0.0.1", loopback.port), timeout=3).close()
        deadline = time.monotonic() + 5
        while (not everywhere.peers or not loopback.peers) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        everywhere.close()
        loopback.close()
    assert result.exit_code == 0 and result2.exit_code == 0, (out, out2)
    assert '"connected": []' in out and '"connected": []' in out2, (out, out2)
    assert everywhere.peers == ["127.0.0.1"] and loopback.peers == ["127.0.0.1"]


def test_sandbox_network_reaches_the_outside_through_the_static_nat(launcher: Launcher) -> None:
    """No per-sandbox NAT or firewall rule is made (cni.for_launcher): the subnet's static rules
    (ORCH-FORWARD, ORCH-MASQUERADE) carry the sandbox's traffic out. A real HTTPS answer from
    the package registry, verified against the host's CA bundle, proves the way out."""
    ca = config.load().ca_bundle
    assert ca and Path(ca).is_file(), "the host has no CA bundle"
    code = (
        "import urllib.request; r = urllib.request.urlopen('https://pypi.org/simple/six/', timeout=30); "
        "print(r.status, b'six-' in r.read())"
    )
    result, out, err = run(
        launcher, py(code), network=Network.SANDBOX, mounts=[Mount(str(ca), IMAGE_CA_PATH)]
    )
    assert (result.exit_code, out.strip()) == (0, "200 True"), err[-2000:]


def test_sandbox_network_has_an_address_on_the_sandbox_bridge(launcher: Launcher) -> None:
    code = "import os; print(sorted(os.listdir('/sys/class/net'))); print(open('/etc/resolv.conf').read())"
    result, out, _ = run(launcher, py(code), network=Network.SANDBOX)
    assert result.exit_code == 0 and out.startswith("['eth0', 'lo']\n") and "nameserver" in out


def test_the_pool_prepares_namespaces_and_leaves_none(launcher: Launcher) -> None:
    pooled = Launcher(prefix=f"{PREFIX}pool-", pool_size=2, state=launcher.state)
    try:
        pool = pooled.pool(Network.SANDBOX)
        pool.warm()
        assert len(list(NETNS_DIR.glob(f"{PREFIX}pool-*"))) == 2
        warmed = set(NETNS_DIR.glob(f"{PREFIX}pool-*"))
        made_by_the_caller: list[str] = []
        make, caller = pool._new, threading.current_thread()

        def new() -> Netns:
            if threading.current_thread() is caller:
                made_by_the_caller.append("made")
            return make()

        pool._new = new  # type: ignore[method-assign]
        ns = pool.acquire()
        # Ready: one the pool made before (its plugins ran then), none made for the caller now.
        assert made_by_the_caller == [] and ns.path in warmed
        assert ns.address and ns.path and ns.path.exists()
        pool.release(ns)
        pool.wait()
        assert not ns.path.exists()
    finally:
        pooled.close()
    assert not list(NETNS_DIR.glob(f"{PREFIX}pool-*"))


KILLED_SERVER = """
import sys
from orch import config
from orch.builder import base_images
from orch.builder.host import IMAGE_CA_PATH
from orch.engine.base import ContainerSpec
from orch.engine.network import Network
from orch.sandbox.runc import Launcher
spec = ContainerSpec(image=base_images.image_tag("python"), argv=["sleep", "600"], name=sys.argv[1],
                     labels={}, user="1000:1000", memory_bytes=64 << 20, pids=16, read_only=False,
                     network=Network.SANDBOX)
Launcher(prefix=sys.argv[2], pool_size=1).run_container(spec, print, print)
"""


def test_sweep_removes_what_a_killed_server_left(launcher: Launcher) -> None:
    name = f"{PREFIX}killed"
    server = subprocess.Popen([sys.executable, "-c", KILLED_SERVER, name, PREFIX])
    try:
        deadline = time.monotonic() + 60
        while name not in launcher.containers(PREFIX):
            assert time.monotonic() < deadline and server.poll() is None, "the sandbox never started"
            time.sleep(0.1)
        time.sleep(0.5)  # the pool's refill is under way too
    finally:
        server.kill()
        server.wait()
    # A state file being written at the kill is left half made, as NAME.tmp.
    (launcher.state / "netns" / f"{PREFIX}net-partial.tmp").write_bytes(b"")
    left = leftovers(launcher)
    assert {"runtime", "bundles", "mounts", "cgroups", "netns", "netns state", "addresses"} <= set(left), left
    assert launcher.sweep(PREFIX) >= 2
    assert leftovers(launcher) == {}


# Listens on 8080 for argv[1] seconds, connects to itself once (the control: its listener
# works), and prints the addresses it accepted connections from.
LISTEN = """
import json, socket, sys, time
srv = socket.create_server(('0.0.0.0', 8080))
srv.settimeout(0.2)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.connect(('192.0.2.1', 9))
    me = s.getsockname()[0]
socket.create_connection((me, 8080), timeout=3).close()
print('listening on', me, flush=True)
accepted, end = [], time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        conn, addr = srv.accept()
        accepted.append(addr[0])
        conn.close()
    except TimeoutError:
        pass
print(json.dumps({'me': me, 'accepted': accepted}))
"""


def test_a_sandbox_is_reached_neither_from_the_host_nor_from_another_sandbox(launcher: Launcher) -> None:
    output: list[bytes] = []
    spec = ContainerSpec(
        image=base_images.image_tag("python"),
        argv=["python3", "-c", LISTEN, "8"],
        name=f"{PREFIX}listener",
        labels={},
        user="1000:1000",
        network=Network.SANDBOX,
    )
    done: list[ContainerExit] = []
    thread = threading.Thread(
        target=lambda: done.append(launcher.run_container(spec, output.append, output.append, 60))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        # The whole line: the output comes in pieces, and one may end inside the address.
        while (listening := re.search(rb"listening on (\S+)\n", b"".join(output))) is None:
            assert time.monotonic() < deadline and thread.is_alive(), b"".join(output)
            time.sleep(0.05)
        address = listening[1].decode()
        try:
            socket.create_connection((address, 8080), timeout=2).close()
            from_host = "connected"
        except OSError as e:
            from_host = type(e).__name__
        probe, out, _ = run(launcher, ["python3", "-c", PROBE, "8080", address], network=Network.SANDBOX)
    finally:
        thread.join(60)
    seen = b"".join(output).decode().splitlines()[-1]
    assert done == [ContainerExit(0)] and probe.exit_code == 0
    assert from_host != "connected"
    assert '"connected": []' in out, out
    assert f'"accepted": ["{address}"]' in seen, seen  # only its own control got through


def test_sandboxes_run_side_by_side(launcher: Launcher) -> None:
    results: list[tuple[ContainerExit, str, str]] = []

    def one(i: int) -> None:
        network = Network.SANDBOX if i % 2 else Network.NONE
        results.append(run(launcher, ["sh", "-c", f"sleep 0.5; echo {i}"], network=network))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(out for _, out, _ in results) == [f"{i}\n" for i in range(6)]
    assert all(r == ContainerExit(0) for r, _, _ in results)


class OwnImage:
    """An image of this test's own (the python base plus a /version file), so unmounting or
    replacing it touches nothing that another test or engineer uses."""

    def __init__(self) -> None:
        self.tag = f"localhost/{PREFIX.rstrip('-')}/own:1"
        self.ids: list[str] = []

    def commit(self, version: str) -> None:
        name = f"{PREFIX}commit"
        base = base_images.image_tag("python")
        make = ["podman", "run", "--name", name, base, "sh", "-c", f"echo {version} > /version"]
        subprocess.run(make, capture_output=True, check=True)
        made = subprocess.run(
            ["podman", "commit", "-q", name, self.tag], capture_output=True, text=True, check=True
        )
        self.ids.append(made.stdout.strip())
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=True)

    def remove(self) -> None:
        for image in self.ids:
            subprocess.run(["podman", "image", "unmount", "--force", image], capture_output=True, check=False)
            subprocess.run(["podman", "rmi", "-f", image], capture_output=True, check=False)


@pytest.fixture
def own_image() -> Iterator[OwnImage]:
    image = OwnImage()
    image.commit("one")
    yield image
    image.remove()


def test_an_unmounted_or_replaced_image_is_mounted_again(launcher: Launcher, own_image: OwnImage) -> None:
    def version() -> str:
        result, out, err = run(launcher, ["cat", "/version"], image=own_image.tag)
        assert result.exit_code == 0, err
        return out.strip()

    assert version() == "one"
    root = launcher.images.get(own_image.tag).root
    # Something unmounts the image (podman image unmount, a podman rmi of another tag...).
    subprocess.run(["podman", "image", "unmount", "--force", own_image.tag], capture_output=True, check=True)
    assert not os.path.ismount(root)
    assert version() == "one"
    # A rebuild moves the tag to a new image: the next sandbox runs the new one.
    own_image.commit("two")
    assert version() == "two"


def image_exists(image_id: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image_id], check=False).returncode == 0


@contextlib.contextmanager
def reading_version(
    launcher: Launcher, image: OwnImage, name: str
) -> Iterator[tuple[list[bytes], list[ContainerExit]]]:
    """A sandbox of `image` that prints "started", then /version 2 s later, run in a thread:
    inside, it has started; its output and its exit (once ended) in the lists given."""
    output: list[bytes] = []
    done: list[ContainerExit] = []
    spec = ContainerSpec(
        image=image.tag,
        argv=["sh", "-c", "echo started; sleep 2; cat /version"],
        name=f"{PREFIX}{name}",
        labels={},
        user="1000:1000",
    )
    thread = threading.Thread(
        target=lambda: done.append(launcher.run_container(spec, output.append, output.append, 60))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while b"started" not in b"".join(output):
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        yield output, done
    finally:
        thread.join(60)


def test_an_image_whose_tag_moved_goes_once_its_last_sandbox_ends(
    launcher: Launcher, own_image: OwnImage
) -> None:
    """A rebuild moves the tag while a sandbox runs on the old image: the old image stays under
    it (held), and goes when that sandbox ends; the new one stays held for the next sandboxes."""
    with reading_version(launcher, own_image, "moved") as (output, done):
        own_image.commit("two")  # the tag moves; the rebuild's removal of the old one is refused
        old, new = own_image.ids
        subprocess.run(["podman", "rmi", old], capture_output=True, check=False)
        assert image_exists(old)
    assert [d.exit_code for d in done] == [0] and b"one" in b"".join(output)
    # Removed in the background after the sandbox's teardown: `podman rm` of the holder, then
    # `podman rmi`, which take seconds each on a loaded machine (it failed once at 30 s in CI).
    deadline = time.monotonic() + 90
    while image_exists(old):
        assert time.monotonic() < deadline, "the old image stayed after its last sandbox"
        time.sleep(0.2)
    result, out, err = run(launcher, ["cat", "/version"], image=own_image.tag)
    assert (result.exit_code, out.strip()) == (0, "two"), err
    assert image_exists(new)
    refused = subprocess.run(["podman", "rmi", new], capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr  # still held


def test_an_image_in_use_is_not_removed_under_a_running_sandbox(
    launcher: Launcher, own_image: OwnImage
) -> None:
    """Podman refuses `podman rmi` of an image a container uses; a runc sandbox is no container
    of Podman's, so the launcher holds each image it runs with a created container."""
    with reading_version(launcher, own_image, "inuse") as (output, done):
        removed = subprocess.run(["podman", "rmi", own_image.tag], capture_output=True, check=False)
    assert removed.returncode != 0  # "image is in use", as for a Podman container
    assert [d.exit_code for d in done] == [0] and b"one" in b"".join(output)


HOG = (
    "import threading, time\n"
    "threading.stack_size(64 * 1024)\n"
    "n = 0\n"
    "try:\n"
    "    while True:\n"
    "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    "        n += 1\n"
    "except RuntimeError:\n"
    "    print(n, flush=True)\n"
    "time.sleep(60)\n"
)
FORKS = (
    "import subprocess\n"
    "ok = 0\n"
    "for _ in range(10):\n"
    "    try:\n"
    "        ok += subprocess.run(['true']).returncode == 0\n"
    "    except OSError as e:\n"
    "        print(e)\n"
    "print('forks', ok)\n"
)


def test_one_sandbox_at_its_process_limit_leaves_another_its_forks(launcher: Launcher) -> None:
    """Every sandbox runs as the host's uid 1000, whose processes the kernel counts together
    against RLIMIT_NPROC: it is far above one sandbox's highest limit (4,096, the pids cgroup
    bounds each), so one at its limit leaves the others theirs. Found by a tester: at 4,096 (what
    containers.conf said), one run's 4,096 threads made every other run's fork fail."""
    name = f"{PREFIX}hog{uuid.uuid4().hex[:6]}"
    hog = ContainerSpec(
        image=base_images.image_tag("python"),
        argv=py(HOG),
        name=name,
        labels={},
        user="1000:1000",
        memory_bytes=1024 * MiB,
        pids=4096,
        tmpfs={"/tmp": "rw,nosuid,nodev,mode=1777,size=16m"},
    )
    done = threading.Event()
    said: list[bytes] = []
    ended: list[ContainerExit] = []
    thread = threading.Thread(
        target=lambda: ended.append(
            launcher.run_container(hog, said.append, lambda _b: None, timeout=120, should_stop=done.is_set)
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not said and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        assert said, f"the sandbox never reached its limit: {ended}"
        assert int(b"".join(said)) >= 4000  # its own limit, not the host's count, stopped it
        result, out, err = run(launcher, py(FORKS), pids=64)
        assert (result, out) == (ContainerExit(0), "forks 10\n"), err
    finally:
        done.set()
        thread.join(60)
    assert ended and ended[0].cancelled
