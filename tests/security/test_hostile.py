"""Hostile agents: each attempt ends in a recorded outcome, the host stays healthy, other runs go on.

Every case publishes a small agent that tries one thing and prints what it managed; the test checks
the run's recorded status/reason and that nothing reached the host. A summary table of the cases
is printed at the end (pytest -s shows it) and copied into docs/trust.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.host_listener import Listener, host_address
from tests.integration.conftest import Server, runtime_containers, sandbox_address
from tests.integration.test_runs import write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTCOMES: list[tuple[str, str, str]] = []  # (category, attempt, recorded outcome)


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    width = max((len(a) for _, a, _ in OUTCOMES), default=10)
    print("\nhostile agents: category | attempt | recorded outcome")
    for category, attempt, outcome in OUTCOMES:
        print(f"  {category:<31} {attempt:<{width}}  {outcome}")


def run_agent(server: Server, tmp_path: Path, name: str, code: str, manifest: str = "") -> dict:
    files = {"main.py": code}
    if manifest:
        files["orch.yaml"] = manifest
    write(tmp_path / name, files)
    assert server.cli("publish", str(tmp_path / name), "--name", name).returncode == 0
    res = server.cli("run", name, "--json")
    assert res.returncode in (0, 1), res.stdout + res.stderr
    run: dict = json.loads(res.stdout)
    assert run["isolation"] == server.settings["ORCH_ISOLATION"], run  # the runtime under test
    return run


def record(category: str, attempt: str, run: dict, what: str = "") -> None:
    outcome = run["status"] + (f" ({run['reason']})" if run["reason"] else "")
    category = f"[{run.get('isolation')}] {category}"
    OUTCOMES.append((category, attempt, f"{what}; run {outcome}" if what else outcome))


def test_reading_host_files(server: Server, tmp_path: Path) -> None:
    secret_paths = [str(server.home / "config.toml"), str(server.home / "orch.db"), "/root/.bash_history"]
    code = (
        "import json, os\n"
        f"paths = {secret_paths!r}\n"
        "print(json.dumps({p: os.path.exists(p) for p in paths}))\n"
    )
    run = run_agent(server, tmp_path, "read-host", code)
    record("host files", "read ORCH_HOME config and database", run, "none of them visible")
    assert run["status"] == "succeeded"
    assert not any(json.loads(run["stdout"]).values())


def test_writing_outside_the_sandbox(server: Server, tmp_path: Path) -> None:
    code = (
        "import os\n"
        "hits = []\n"
        "for p in ('/etc/orch-evil', '/usr/orch-evil', '/opt/orch/bundle/evil', '/opt/orch-evil'):\n"
        "    try:\n"
        "        open(p, 'w').write('x'); hits.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(len(hits))\n"
    )
    run = run_agent(server, tmp_path, "write-out", code)
    record("writing outside", "write to /etc, /usr, the bundle, /opt", run, "all 4 writes refused")
    assert run["stdout"] == "0\n"
    assert not Path("/etc/orch-evil").exists() and not Path("/opt/orch-evil").exists()


def test_seeing_other_processes(server: Server, tmp_path: Path) -> None:
    code = "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
    run = run_agent(server, tmp_path, "ps", code)
    record("processes", "count processes in /proc", run, f"sees {run['stdout'].strip()} (its own)")
    # Its own pid namespace: the init, the shell that became python, nothing of the host.
    assert run["status"] == "succeeded" and int(run["stdout"]) <= 5


# mov eax, 20 (getpid in the i386 table); int 0x80 (the kernel's 32-bit syscall entry); ret
INT80_GETPID = (
    "import ctypes, mmap\n"
    "page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
    "page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))\n"
    "call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))\n"
    "print('calling', flush=True)\n"
    "print('returned', call(), flush=True)\n"
)


def test_32_bit_syscalls(server: Server, tmp_path: Path) -> None:
    run = run_agent(server, tmp_path, "int80", INT80_GETPID)
    returned = [line.split()[1] for line in run["stdout"].splitlines() if line.startswith("returned")]
    what = f"returned {returned[0]}" if returned else "process ended before an answer"
    record("32-bit syscalls", "getpid through int 0x80", run, what)
    assert run["stdout"].startswith("calling")  # the code ran up to the syscall
    # Never a pid: under runc the filter allows the native ABI only and SIGSYS ends the process;
    # gVisor has no 32-bit syscall table.
    if run["isolation"] == "runc":
        assert (run["status"], run["reason"], returned) == (
            "failed",
            "killed (SIGSYS): a system call the sandbox does not allow",
            [],
        ), run
    else:
        assert (run["status"], returned) == ("succeeded", ["-38"]), run  # -ENOSYS


USER_NAMESPACE = (
    "import ctypes, json, os, subprocess, threading\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "def tried(call):  # in a child, so that what it made does not change this process\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        got = call()\n"
    "        os._exit(0 if got >= 0 else ctypes.get_errno())  # clone's own child: 0 too\n"
    "    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
    "    return 'made' if code == 0 else os.strerror(code)\n"
    "said = {'unshare': tried(lambda: libc.unshare(0x10000000)),\n"
    "        'clone': tried(lambda: libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0))}\n"
    "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os._exit(7)\n"
    "said['fork'] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
    "said['subprocess'] = subprocess.run(['true']).returncode\n"
    "print(json.dumps(said))\n"
)


def test_new_user_namespaces(server: Server, tmp_path: Path) -> None:
    """A user namespace would give the agent every capability over namespaces of its own
    (mounts, interfaces, nf_tables): the first step of most kernel exploits. Refused, while
    threads, fork and subprocesses work (clone3 answers ENOSYS; the C library falls back)."""
    run = run_agent(server, tmp_path, "userns", USER_NAMESPACE)
    assert run["status"] == "succeeded", run
    said = json.loads(run["stdout"])
    record(
        "user namespaces", "unshare / clone with CLONE_NEWUSER", run, f"{said['unshare']}, {said['clone']}"
    )
    assert run["status"] == "succeeded", run
    assert (said["fork"], said["subprocess"]) == (7, 0), said
    if run["isolation"] == "runc":
        assert (said["unshare"], said["clone"]) == ("Operation not permitted",) * 2, said


KEYRINGS = (
    "import ctypes, json, os, platform\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "nr = {'x86_64': (250, 248), 'aarch64': (219, 217)}[platform.machine()]  # keyctl, add_key\n"
    "def said(r):\n"
    "    return 'done' if r >= 0 else os.strerror(ctypes.get_errno())\n"
    "joined = libc.syscall(nr[0], 1, b'orch-hostile-channel')  # JOIN_SESSION_KEYRING, named\n"
    "print(json.dumps({'join': said(joined),\n"
    "                  'link into the uid keyring': said(libc.syscall(nr[0], 8, joined, -4)),\n"
    "                  'add_key': said(libc.syscall(nr[1], b'user', b'k', b'v', 1, -4))}))\n"
)


def test_kernel_keyrings(server: Server, tmp_path: Path) -> None:
    """The kernel's user keyring is the uid's across the machine, and every sandbox runs as uid
    1000: a keyring linked into it, named with a run's data, was read by the next run of any
    workspace, and 200 of them filled the uid's quota for every sandbox (found by a tester). No
    keyring call reaches the host's kernel (under gVisor they reach gVisor's own)."""
    run = run_agent(server, tmp_path, "keyrings", KEYRINGS)
    assert run["status"] == "succeeded", run
    said = json.loads(run["stdout"])
    record("kernel keyrings", "keyctl: a named keyring linked into the uid's", run, ", ".join(said.values()))
    if run["isolation"] == "runc":
        assert set(said.values()) == {"Function not implemented"}, said


def test_fork_bomb(server: Server, tmp_path: Path) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        raise\n"
    run = run_agent(server, tmp_path, "forks", code, "resources: {pids: 64, timeout: 30}\n")
    record("fork bomb", "fork until it fails", run)
    assert run["status"] in ("failed", "timed_out")
    # The limit is named from the sandbox's cgroup. Under gVisor it is the agent's RLIMIT_NPROC,
    # which gVisor's own kernel enforces and no counter of the host's shows: the exit code only.
    said = "exit code 1: process limit (64) reached" if run["isolation"] == "runc" else "exit code 1"
    assert run["status"] == "timed_out" or run["reason"] == said, run


def test_memory_bomb(server: Server, tmp_path: Path) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    run = run_agent(server, tmp_path, "memory", code, "resources: {memory: 128Mi}\n")
    record("memory bomb", "allocate 16 MiB blocks forever", run)
    assert (run["status"], run["reason"]) == ("failed", "killed: memory limit 128 MiB")


def test_filling_the_disk(server: Server, tmp_path: Path, host_disk_kept: Callable[[], None]) -> None:
    code = (
        "import errno\n"
        "written = 0\n"
        "for place in ('/home/user/work/fill', '/tmp/fill'):\n"
        "    try:\n"
        "        with open(place, 'wb') as f:\n"
        "            while True:\n"
        "                f.write(b'x' * (1 << 20)); f.flush(); written += 1\n"
        "    except OSError as e:\n"
        "        print(place, errno.errorcode[e.errno], written)\n"
    )
    run = run_agent(server, tmp_path, "disk", code, "resources: {memory: 256Mi}\n")
    record("filling the disk", "write until the disk is full", run)
    # The writable places are sized tmpfs: writes stop with ENOSPC (or the memory limit ends it).
    assert run["status"] in ("succeeded", "failed")
    assert "ENOSPC" in run["stdout"] or run["reason"] == "killed: memory limit 256 MiB"
    host_disk_kept()


def test_endless_cpu(server: Server, tmp_path: Path) -> None:
    run = run_agent(
        server, tmp_path, "spin", "while True:\n    pass\n", "resources: {timeout: 3, cpus: 0.5}\n"
    )
    record("endless CPU", "busy loop", run)
    assert (run["status"], run["reason"]) == ("timed_out", "timed out after 3 s")


# Inside a sandbox: the addresses that lead to the host (the bridge's gateway from the routing
# table, Podman's host name, the default network's gateway and the host's own address, given as
# input), tried with a connection that sends a few bytes; prints the ones that connected.
PROBE = """
import json, os, socket, struct, sys, threading
def gateway():
    for line in open('/proc/net/route').read().splitlines()[1:]:
        f = line.split()
        if f[1] == '00000000':
            return socket.inet_ntoa(struct.pack('<L', int(f[2], 16)))
target = json.loads(os.environ['ORCH_INPUT'])
hosts = [h for h in (gateway(), 'host.containers.internal', '10.88.0.1', *target['hosts']) if h]
connected = []
def attempt(host):
    try:
        with socket.create_connection((host, target['port']), timeout=3) as s:
            s.sendall(b'hello from a sandbox')
            connected.append(host)
    except OSError:
        pass
tries = [threading.Thread(target=attempt, args=(h,)) for h in hosts]  # at once: each may wait 3 s
for t in tries:
    t.start()
for t in tries:
    t.join()
print(json.dumps({'tried': hosts, 'connected': sorted(connected, key=hosts.index)}))
"""


def run_probe(server: Server, tmp_path: Path, name: str, port: int, hosts: list[str]) -> dict:
    write(tmp_path / name, {"main.py": PROBE})
    assert server.cli("publish", str(tmp_path / name), "--name", name).returncode == 0
    res = server.cli("run", name, "--json", "--input", json.dumps({"port": port, "hosts": hosts}))
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return json.loads(res.stdout)


def test_reaching_the_server_api(server: Server, tmp_path: Path) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    run = run_probe(server, tmp_path, "api", port, ["127.0.0.1"])
    record("server API", "connect to the server's port from inside", run, "no address connects")
    assert run["status"] == "succeeded"
    assert json.loads(run["stdout"])["connected"] == []


def test_reaching_host_services(server: Server, tmp_path: Path) -> None:
    listener = Listener("0.0.0.0")
    try:
        run = run_probe(server, tmp_path, "host", listener.port, [host_address()])
        tried = json.loads(run["stdout"])["tried"]
        # The control: the same listener does take a connection from the host itself.
        socket.create_connection(("127.0.0.1", listener.port), timeout=3).close()
        deadline = time.monotonic() + 5
        while not listener.peers and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()
    record(
        "host services",
        f"connect to a host service on 0.0.0.0 via {len(tried)} addresses",
        run,
        "the listener saw no sandbox",
    )
    assert run["status"] == "succeeded" and len(tried) >= 4
    assert listener.peers == ["127.0.0.1"], listener.peers


# A sandbox that listens on 8080 for `ORCH_INPUT` seconds (or until /tmp/stop exists), connects
# to itself once (the control: its listener works), and prints the addresses it accepted
# connections from.
LISTEN = """
import json, os, socket, time
srv = socket.create_server(('0.0.0.0', 8080))
srv.settimeout(0.2)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.connect(('192.0.2.1', 9))
    me = s.getsockname()[0]
socket.create_connection((me, 8080), timeout=3).close()
print('listening on', me, flush=True)
accepted, end = [], time.time() + float(os.environ['ORCH_INPUT'])
while time.time() < end and not os.path.exists('/tmp/stop'):
    try:
        conn, addr = srv.accept()
        accepted.append(addr[0])
        conn.close()
    except TimeoutError:
        pass
print(json.dumps({'me': me, 'accepted': accepted}))
"""


def connect_from_host(address: str, port: int) -> str:
    """'connected', or the error's name, of a TCP connection from the host to a sandbox."""
    try:
        socket.create_connection((address, port), timeout=3).close()
        return "connected"
    except OSError as e:
        return type(e).__name__


def container_address(run_id: str) -> str:
    """The run's sandbox address, as the host sees it."""
    return sandbox_address(run_id)


def stop_listening(run_id: str) -> None:
    """Ends LISTEN in a run's sandbox once everything was tried: /tmp/stop, made by the runtime's
    own exec from the host (the run's window is only an upper bound; nothing else reaches it)."""
    ((name, command),) = runtime_containers(run_id)
    made = subprocess.run(
        [*command, "exec", name, "touch", "/tmp/stop"], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stdout + made.stderr


def test_listening_port_reached_from_host_and_other_sandboxes(server: Server, tmp_path: Path) -> None:
    write(tmp_path / "listen", {"main.py": LISTEN})
    assert server.cli("publish", str(tmp_path / "listen")).returncode == 0
    with server.api() as api:
        run_id = api.post("/v1/runs", json={"agent": "listen", "input": "120"}).json()["id"]
        deadline = time.monotonic() + 60
        while "listening" not in (out := api.get(f"/v1/runs/{run_id}/logs").json()["stdout"]):
            assert time.monotonic() < deadline, "the listener never started"
            time.sleep(0.2)
        address = container_address(run_id)
        assert address and address in out
        # From the host (the sandbox's address, port 8080) and, at the same time, from another
        # sandbox on the same network: each waits out its own connect timeout.
        tried: dict[str, str] = {}
        host = threading.Thread(target=lambda: tried.update(host=connect_from_host(address, 8080)))
        host.start()
        probe = run_probe(server, tmp_path, "neighbour", 8080, [address])
        host.join()
        from_host = tried["host"]
        # All tried while it listened: it has not reported (its report ends it). Then it ends.
        logs = api.get(f"/v1/runs/{run_id}/logs").json()
        assert logs["status"] == "running" and "accepted" not in logs["stdout"], logs
        stop_listening(run_id)
        deadline = time.monotonic() + 60
        while (logs := api.get(f"/v1/runs/{run_id}/logs").json())["status"] in (
            "queued",
            "starting",
            "running",
        ):
            assert time.monotonic() < deadline, "the listener never finished"
            time.sleep(0.2)
        run = {**api.get(f"/v1/runs/{run_id}").json(), "stdout": logs["stdout"]}
    seen = json.loads(run["stdout"].splitlines()[-1])
    record(
        "listening port",
        "listen on 8080; the host and another sandbox connect",
        run,
        f"host: {from_host}; neighbour connected to {json.loads(probe['stdout'])['connected']}; "
        f"listener accepted {len(seen['accepted']) - 1} besides its own control",
    )
    assert run["status"] == "succeeded"
    # The listener took exactly one connection: its own control. Neither the host nor the
    # neighbouring sandbox got through.
    assert seen["accepted"] == [seen["me"]], seen
    assert from_host != "connected"
    assert json.loads(probe["stdout"])["connected"] == []


def test_secrets_stay_out_of_sandboxes_and_logs(server: Server, tmp_path: Path) -> None:
    code = "import os\nprint(sorted(k for k in os.environ if k.startswith('ORCH_')))\n"
    run = run_agent(server, tmp_path, "env", code)
    record("secrets", "look for tokens in the environment and logs", run, "only ORCH_INPUT, ORCH_RUN_ID")
    assert json.loads(run["stdout"].replace("'", '"')) == ["ORCH_INPUT", "ORCH_RUN_ID"]
    token = server.token
    # The server's logs, and its database, which holds the runs' output.
    for path in [*(server.home / "logs").rglob("*"), *server.home.glob("orch.db*")]:
        if path.is_file():
            assert token not in path.read_bytes().decode(errors="replace"), path


def test_other_runs_go_on_during_an_attack(server: Server, tmp_path: Path) -> None:
    write(tmp_path / "hog", {"main.py": "while True:\n    pass\n", "orch.yaml": "resources: {timeout: 8}\n"})
    write(tmp_path / "nice", {"main.py": "print('still fine')\n"})
    for name in ("hog", "nice"):
        assert server.cli("publish", str(tmp_path / name)).returncode == 0
    results: dict[str, dict] = {}

    def go(name: str) -> None:
        results[name] = json.loads(server.cli("run", name, "--json").stdout)

    hog = threading.Thread(target=go, args=("hog",))
    hog.start()
    go("nice")
    hog.join(60)
    record("isolation", "a normal run while another burns CPU", results["nice"], "the normal run finished")
    assert results["nice"]["status"] == "succeeded" and results["nice"]["stdout"] == "still fine\n"
    assert results["hog"]["status"] == "timed_out"
    assert os.getloadavg()[0] < 50  # the machine is still answering
