"""Services end to end: `orch service` against a real server on real Podman."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Server
from tests.integration.test_runs import LOCK, PACKAGE, write

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HTTP_SERVICE = """
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "v1")

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        marker = open("/opt/marker").read().strip() if os.path.exists("/opt/marker") else "-"
        body = f"{VERSION} {self.path} uid={os.getuid()} marker={marker}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print("listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

NODE_SERVICE = """
const http = require('http');
const isNumber = require('is-number');
http.createServer((req, res) => {
  res.end(`node ${process.version} is-number(5)=${isNumber(5)} ${req.url}\\n`);
}).listen(Number(process.env.PORT), '0.0.0.0', () => console.log('listening'));
"""


def deploy(server: Server, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("service", "deploy", str(path), *args)


def fetch(server: Server, name: str, path: str = "", timeout: float = 30) -> str:
    """The service's answer through the server, retried while it (re)starts."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        with server.services() as site:
            resp = site.get(f"/services/default/{name}/{path}")
        if resp.status_code == 200:
            return resp.text
        last = resp.text
        time.sleep(0.3)
    raise AssertionError(f"{name} did not answer: {last}")


def status(server: Server, name: str) -> dict:
    res = server.cli("service", "status", name, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def containers(server: Server) -> list[str]:
    out = subprocess.run(
        [
            "podman",
            "ps",
            "-a",
            "--filter",
            f"label=org.orch.instance={server.instance}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def test_stdlib_http_service_answers_through_the_server(server: Server, tmp_path: Path) -> None:
    write(tmp_path / "web", {"main.py": HTTP_SERVICE})
    res = deploy(server, tmp_path / "web", "--name", "web")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "web v1 is running at" in res.stdout
    assert fetch(server, "web", "hello?x=1") == "v1 /hello?x=1 uid=1000 marker=-\n"
    info = status(server, "web")
    assert {"name", "state", "url", "restarts"} <= info.keys()
    assert (info["name"], info["state"], info["restarts"]) == ("web", "running", 0)
    assert info["url"] == f"{server.services_url}/services/default/web/"
    assert httpx.get(info["url"]).status_code == 401  # the workspace token is needed
    listed = json.loads(server.cli("service", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["web"]
    assert "listening on 8080" in server.cli("service", "logs", "web").stdout
    # Never a port on a host interface: the container publishes nothing.
    ports = subprocess.run(
        ["podman", "ps", "--filter", f"label=org.orch.instance={server.instance}", "--format", "{{.Ports}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ports.strip() == ""


def test_node_service_with_a_lockfile(server: Server, tmp_path: Path) -> None:
    write(
        tmp_path / "js",
        {
            "index.js": NODE_SERVICE,
            "package.json": json.dumps(PACKAGE),
            "package-lock.json": json.dumps(LOCK),
        },
    )
    res = deploy(server, tmp_path / "js", "--name", "counter")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "package-lock.json" in res.stderr
    assert fetch(server, "counter", "n").startswith("node v20.")
    assert "is-number(5)=true /n" in fetch(server, "counter", "n")
    dep = server.get("/v1/services/counter/deployments/1")
    assert "npm ci (package-lock.json)" in dep["log_tail"]
    assert "npm notice" not in dep["log_tail"]  # no "New major version of npm available"


def test_run_command_runs_before_the_command(server: Server, tmp_path: Path) -> None:
    write(
        tmp_path / "prep",
        {
            "main.py": HTTP_SERVICE,
            "orch.yaml": 'run_command: echo "prepared-by-$(id -u)" > /opt/marker\n',
        },
    )
    res = deploy(server, tmp_path / "prep", "--name", "prep")
    assert res.returncode == 0, res.stdout + res.stderr
    # run_command ran as root with a writable root; the service itself runs as user 1000.
    assert fetch(server, "prep") == "v1 / uid=1000 marker=prepared-by-0\n"


GRACEFUL = """
import os, signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def stop(*_):
    print("stopping on SIGTERM", flush=True)
    os._exit(0)

signal.signal(signal.SIGTERM, stop)
sets = ("CapPrm", "CapEff", "CapAmb")
caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith(sets)]
print("caps", *caps, flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), BaseHTTPRequestHandler).serve_forever()
"""


def test_a_run_command_service_gets_sigterm_and_its_shutdown_output_is_kept(
    server: Server, tmp_path: Path
) -> None:
    """Its PID 1 (catatonit, root) forwards `podman stop`'s SIGTERM to the command (uid 1000):
    found by a tester, without CAP_KILL it could not, so every stop waited 10 s for SIGKILL.
    What the command prints then is stored (it was stored before the stop)."""
    write(tmp_path / "grace", {"main.py": GRACEFUL, "orch.yaml": "run_command: echo prepared\n"})
    res = deploy(server, tmp_path / "grace", "--name", "grace")
    assert res.returncode == 0, res.stdout + res.stderr
    res = server.cli("service", "stop", "grace")
    assert res.returncode == 0, res.stdout + res.stderr
    logs = server.cli("service", "logs", "grace").stdout
    assert "caps 0000000000000000 0000000000000000 0000000000000000\n" in logs  # none kept
    assert logs.endswith("stopping on SIGTERM\n"), logs


def test_run_command_can_install_debian_packages(server: Server, tmp_path: Path) -> None:
    main = HTTP_SERVICE.replace(
        'marker = open("/opt/marker").read().strip() if os.path.exists("/opt/marker") else "-"',
        'import subprocess; marker = subprocess.run(["jq", "--version"], capture_output=True, text=True)'
        ".stdout.strip()",
    )
    write(
        tmp_path / "apt",
        {
            "main.py": main,
            "orch.yaml": (
                "run_command: apt-get update -qq && apt-get install -y -qq --no-install-recommends jq\n"
            ),
        },
    )
    res = deploy(server, tmp_path / "apt", "--name", "apt")
    assert res.returncode == 0, res.stdout + res.stderr
    assert fetch(server, "apt") == "v1 / uid=1000 marker=jq-1.6\n"


def test_a_service_on_its_own_dockerfile_with_dependencies_on_top(server: Server, tmp_path: Path) -> None:
    dockerfile = (
        "FROM e2bdev/code-interpreter:latest\n"
        "RUN echo from-the-dockerfile > /opt/marker\n"
        "USER nobody\n"  # its steps' user: the service's own layers and process don't depend on it
    )
    main = HUMANIZED.replace('VERSION = "v1"', "VERSION = humanize.intcomma(1000)")
    app = write(
        tmp_path / "d",
        {"main.py": main, "requirements.txt": "humanize==4.9.0\n", "Dockerfile": dockerfile},
    )
    res = deploy(server, app, "--name", "docked")
    assert res.returncode == 0, res.stdout + res.stderr
    assert fetch(server, "docked") == "1,000 / uid=1000 marker=from-the-dockerfile\n"
    env = server.get("/v1/environments/docked-dockerfile")
    assert env["status"] == "ready"
    # New code on the same Dockerfile: the environment is reused, not built again.
    write(app, {"main.py": main.replace("1000)", "2000)")})
    assert deploy(server, app, "--name", "docked").returncode == 0
    assert fetch(server, "docked") == "2,000 / uid=1000 marker=from-the-dockerfile\n"
    assert server.get("/v1/environments/docked-dockerfile")["build_id"] == env["build_id"]
    # A Dockerfile the environments' rules refuse is refused here too, and nothing is made.
    write(tmp_path / "bad", {"main.py": HTTP_SERVICE, "Dockerfile": "FROM ubuntu:22.04\n"})
    res = deploy(server, tmp_path / "bad", "--name", "bad")
    assert res.returncode == 2, res.stderr
    assert "✗ The bundle's Dockerfile was rejected (1 error); nothing was deployed." in res.stderr
    assert "line 1  FROM" in res.stderr
    assert [s["name"] for s in json.loads(server.cli("service", "list", "--json").stdout)] == ["docked"]


def test_a_killed_service_comes_back_and_the_restart_is_counted(server: Server, tmp_path: Path) -> None:
    write(tmp_path / "web", {"main.py": HTTP_SERVICE})
    assert deploy(server, tmp_path / "web", "--name", "web").returncode == 0
    before = status(server, "web")["container"]
    subprocess.run(["podman", "kill", before], capture_output=True, check=True)
    deadline = time.monotonic() + 30
    while (info := status(server, "web"))["restarts"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fetch(server, "web").startswith("v1 /")
    info = status(server, "web")
    assert info["restarts"] == 1 and info["state"] == "running" and info["container"] != before
    assert info["last_exit"] == 137 and "listening on 8080" in info["last_output"]
    assert containers(server) == [info["container"]]


def test_after_a_killed_server_restarts_the_service_answers_with_one_container(
    server: Server, tmp_path: Path
) -> None:
    write(tmp_path / "web", {"main.py": HTTP_SERVICE})
    assert deploy(server, tmp_path / "web", "--name", "web").returncode == 0
    container = status(server, "web")["container"]
    server.kill()
    assert containers(server) == [container]  # services outlive their server
    server.start()
    assert fetch(server, "web", "again") == "v1 /again uid=1000 marker=-\n"
    assert containers(server) == [container]  # adopted, not duplicated
    assert status(server, "web")["restarts"] == 0


def test_a_failed_redeploy_keeps_the_old_version_answering(server: Server, tmp_path: Path) -> None:
    write(tmp_path / "v1", {"main.py": HTTP_SERVICE})
    assert deploy(server, tmp_path / "v1", "--name", "web").returncode == 0
    write(tmp_path / "v2", {"main.py": "import sys\nprint('v2 is broken', flush=True)\nsys.exit(3)\n"})
    res = deploy(server, tmp_path / "v2", "--name", "web")
    assert res.returncode == 1
    assert "exited with exit code 3" in res.stderr and "v2 is broken" in res.stderr
    assert "web v1 still serves" in res.stderr
    assert fetch(server, "web") == "v1 / uid=1000 marker=-\n"
    info = status(server, "web")
    assert info["version"] == 1 and info["state"] == "running" and "v2 was not deployed" in info["error"]
    # A good v3 replaces v1 only once it answers; then exactly one container is left.
    write(tmp_path / "v3", {"main.py": HTTP_SERVICE.replace('"v1"', '"v3"')})
    assert deploy(server, tmp_path / "v3", "--name", "web").returncode == 0
    assert fetch(server, "web") == "v3 / uid=1000 marker=-\n"
    assert containers(server) == [status(server, "web")["container"]]


FLOOD = """
import os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()

def flood():
    out = sys.stdout
    for i in range(LINES):
        out.write(f"{i:08d} " + "x" * 90 + "\\n")
    out.write("flood done\\n")
    out.flush()

threading.Thread(target=flood).start()
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def test_a_flooding_service_cannot_fill_the_disk(server: Server, tmp_path: Path) -> None:
    from orch.services.deployed_logs import MAX_CONTAINER_LOG, MAX_HISTORY

    lines = 3 * MAX_CONTAINER_LOG // 100  # 100 bytes a line: three times the limit, and more on disk
    write(tmp_path / "flood", {"main.py": FLOOD.replace("LINES", str(lines))})
    res = deploy(server, tmp_path / "flood", "--name", "flood")
    assert res.returncode == 0, res.stdout + res.stderr
    svc = status(server, "flood")
    log = server.home / "logs" / "services" / svc["id"] / f"{svc['container']}.log"
    deadline = time.monotonic() + 180
    text = ""
    with server.api() as api:
        while "flood done" not in text:
            assert time.monotonic() < deadline, f"the flood did not end: {log.stat().st_size} bytes"
            text = api.get("/v1/services/flood/logs").json()["text"]
            time.sleep(1)
    # The file started afresh at its limit (more than once); what the API serves is bounded too.
    assert log.stat().st_size <= MAX_CONTAINER_LOG
    assert len(text.encode()) <= MAX_HISTORY and text.endswith(f"{lines - 1:08d} {'x' * 90}\nflood done\n")
    # What is served is the flood's lines in order, each once. Some are gone: a file started
    # afresh more than once between two of the supervisor's passes goes unread (which ones
    # depends on the passes' timing, so the first lines may or may not be kept), and a line
    # conmon split across two files may be cut where an unread file was.
    numbers = [int(line[:8]) for line in text.splitlines() if re.match(r"\d{8} x", line)]
    assert numbers == sorted(set(numbers)) and len(numbers) < lines
    assert status(server, "flood")["state"] == "running"


HUMANIZED = HTTP_SERVICE.replace(
    'VERSION = os.environ.get("VERSION", "v1")', 'import humanize\nVERSION = "v1"'
)


def test_redeploys_unchanged_restart_nothing_and_changed_code_reuses_the_dependencies(
    server: Server, tmp_path: Path
) -> None:
    from orch.bundle import pack_directory

    app = write(tmp_path / "web", {"main.py": HUMANIZED, "requirements.txt": "humanize==4.9.0\n"})
    assert deploy(server, app, "--name", "web").returncode == 0
    container = status(server, "web")["container"]
    # The same bundle again: answered at once, nothing built, the same container serving.
    with server.api() as api:
        resp = api.post(
            "/v1/services/web/deploy",
            content=pack_directory(app).data,
            headers={"Content-Type": "application/gzip"},
        )
        assert resp.status_code == 200 and resp.json()["unchanged"] is True, resp.text
        assert api.get("/v1/services/web/deployments/2").status_code == 404  # nothing queued, nothing built
    res = deploy(server, app, "--name", "web")
    assert res.returncode == 0 and "web unchanged, still v1" in res.stdout, res.stdout + res.stderr
    info = status(server, "web")
    assert (info["version"], info["container"], info["restarts"]) == (1, container, 0)
    # New code, the same requirements.txt: v2, whose build takes the installed layer from the cache.
    write(app, {"main.py": HUMANIZED.replace('VERSION = "v1"', 'VERSION = "v2"')})
    assert deploy(server, app, "--name", "web").returncode == 0
    assert fetch(server, "web").startswith("v2 /")
    log = server.get("/v1/services/web/deployments/2")["log_tail"]
    install = log.index("uv pip install")
    assert "Using cache" in log[install : log.index("\n", log.index("\n", install) + 1)], log


def test_replicas_share_the_requests_and_a_redeploy_fails_none(server: Server, tmp_path: Path) -> None:
    """Requests all through a rolling redeploy of two replicas: not one fails."""
    hostname = HTTP_SERVICE.replace("marker={marker}", "host={os.uname().nodename}")
    app = write(tmp_path / "web", {"main.py": hostname, "orch.yaml": "replicas: 2\n"})
    assert deploy(server, app, "--name", "web").returncode == 0
    info = status(server, "web")
    assert [r["state"] for r in info["replicas"]] == ["running", "running"]
    assert len(containers(server)) == 2
    answers: list[str] = []
    errors: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        with server.services() as site:
            while not done.is_set():
                try:
                    resp = site.get("/services/default/web/")
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                if resp.status_code == 200:
                    answers.append(resp.text)
                else:
                    errors.append(f"{resp.status_code} {resp.text}")

    def answered_by_both(version: str) -> None:
        """Until both replicas answered as `version` (rather than a fixed second's requests)."""
        deadline = time.monotonic() + 30
        while len({a.split("host=")[1].strip() for a in list(answers) if a.split()[0] == version}) < 2:
            assert time.monotonic() < deadline and not errors, (version, errors[:5])
            time.sleep(0.05)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        answered_by_both("v1")
        write(app, {"main.py": hostname.replace('"v1"', '"v2"')})
        res = deploy(server, app, "--name", "web")
        assert res.returncode == 0, res.stdout + res.stderr
        answered_by_both("v2")
    finally:
        done.set()
        thread.join(30)
    assert errors == [], errors[:5]
    versions = [a.split()[0] for a in answers]
    assert "v1" in versions and versions[-1] == "v2" and len(answers) > 50
    # Both replicas answered, before and after.
    hosts = {(a.split()[0], a.split("host=")[1].strip()) for a in answers}
    assert len({h for v, h in hosts if v == "v1"}) == 2 and len({h for v, h in hosts if v == "v2"}) == 2
    assert len(containers(server)) == 2
    assert [r["version"] for r in status(server, "web")["replicas"]] == [2, 2]
