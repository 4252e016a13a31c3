"""Agents and runs end to end: `orch publish` and `orch run` against a real server on real Podman."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Server, sandboxes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCK = {
    "name": "counter",
    "version": "1.0.0",
    "lockfileVersion": 3,
    "requires": True,
    "packages": {
        "": {"name": "counter", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}},
        "node_modules/is-number": {
            "version": "7.0.0",
            "integrity": (
                "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng=="
            ),
            "license": "MIT",
            "engines": {"node": ">=0.12.0"},
        },
    },
}
PACKAGE = {"name": "counter", "version": "1.0.0", "private": True, "dependencies": {"is-number": "7.0.0"}}
NODE_MAIN = """
const isNumber = require('is-number');
let data = '';
process.stdin.on('data', c => data += c);
process.stdin.on('end', () => {
  const input = JSON.parse(process.env.ORCH_INPUT);
  console.log(`node ${process.version} is-number(${input.n})=${isNumber(input.n)} stdin=${data.length}`);
});
"""


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def run_json(server: Server, agent: str, *args: str) -> dict:
    res = server.cli("run", agent, "--json", *args)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return json.loads(res.stdout)


def test_python_agent_with_requirements(server: Server, tmp_path: Path) -> None:
    agent = write(
        tmp_path / "py",
        {
            "main.py": (
                "import json, os, sys, six\n"
                "data = json.loads(sys.stdin.read())\n"
                "assert data == json.loads(os.environ['ORCH_INPUT'])\n"
                "print('hello', data['who'], six.__version__, os.environ['GREETING'], os.getuid())\n"
                "print('to stderr', file=sys.stderr)\n"
            ),
            "requirements.txt": "six==1.16.0\n",
            "orch.yaml": "name: greeter\nenv: {GREETING: hi}\n",
        },
    )
    res = server.cli("publish", str(agent))
    assert res.returncode == 0, res.stderr
    assert "Published greeter v1 · main.py (python)" in res.stdout
    res = server.cli("run", "greeter", "--input", '{"who": "world"}')
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello world 1.16.0 hi 1000\n"
    assert "to stderr" in res.stderr and "environment python (base)" in res.stderr
    assert "Installing requirements.txt" in res.stderr and "succeeded" in res.stderr
    # uv writes a line in pieces; the log has it whole, indented under the install's note.
    assert any(re.fullmatch(r"  Installed 1 package in [\d.]+m?s", line) for line in res.stderr.splitlines())
    second = run_json(server, "greeter", "--input", '{"who": "again"}')
    assert second["status"] == "succeeded" and second["deps"] == "cached"
    assert second["stdout"] == "hello again 1.16.0 hi 1000\n"
    assert second["environment"]["name"] == "python" and second["environment_rule"] == "base"
    log = server.get(f"/v1/runs/{second['id']}/logs")["log"]
    assert "cached, nothing to install" in log and "Installing" not in log
    # Compiled at the install: the cache is mounted read-only, so an agent could not write the
    # bytecode, and would compile every module it imports at every run.
    assert list((server.home / "deps").glob("*/python/__pycache__/six.*.pyc"))


# A package whose build takes 8 s (an in-tree PEP 517 backend, nothing to download): an install
# of it is still under way when the test cancels its run.
SLOW_BACKEND = """\
import base64, hashlib, time, zipfile

FILES = {
    "slowpkg/__init__.py": "VALUE = 'built'\\n",
    "slowpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: slowpkg\\nVersion: 1.0\\n",
    "slowpkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    time.sleep(8)
    name, record = "slowpkg-1.0-py3-none-any.whl", []
    with zipfile.ZipFile(f"{wheel_directory}/{name}", "w") as wheel:
        for path, text in FILES.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
            wheel.writestr(path, text)
        record.append("slowpkg-1.0.dist-info/RECORD,,")
        wheel.writestr("slowpkg-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
"""
BEFORE = "cancelled before the agent started"
SLOW_PROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'


def test_a_cancel_while_the_dependencies_install_cancels_the_run(server: Server, tmp_path: Path) -> None:
    """`orch runs cancel` while requirements.txt installs: the run is cancelled, not failed, and
    its log gives no advice about the dependency files; nothing of the cut install is cached, and
    the next run installs it again and works."""
    agent = write(
        tmp_path / "slow",
        {
            "main.py": "import slowpkg\nprint(slowpkg.VALUE)\n",
            "requirements.txt": "slowpkg @ file:///opt/orch/bundle/slowpkg\n",
            "orch.yaml": "name: slow\n",
        },
    )
    write(agent / "slowpkg", {"pyproject.toml": SLOW_PROJECT, "backend.py": SLOW_BACKEND})
    assert server.cli("publish", str(agent)).returncode == 0
    res = server.cli("run", "slow", "--detach")
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.strip()
    deadline = time.monotonic() + 120
    while "Building slowpkg" not in server.get(f"/v1/runs/{run_id}/logs")["log"]:
        assert time.monotonic() < deadline, server.get(f"/v1/runs/{run_id}/logs")
        time.sleep(0.2)
    res = server.cli("runs", "cancel", run_id)
    assert res.returncode == 0 and "cancelled" in res.stderr, res.stdout + res.stderr
    r = server.get(f"/v1/runs/{run_id}")
    assert (r["status"], r["reason"], r["exit_code"]) == ("cancelled", BEFORE, None)
    log = server.get(f"/v1/runs/{run_id}/logs")["log"]
    assert "requirements.txt: cancelled, nothing installed" in log
    assert "failed" not in log and "Fix the dependency files" not in log, log
    cache = server.home / "deps"
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []  # nor a part of it
    assert sandboxes(run_id) == []  # the install's container went with it
    again = run_json(server, "slow")
    assert (again["status"], again["deps"], again["stdout"]) == ("succeeded", "installed", "built\n"), again


def test_an_agents_own_modules_are_imported_compiled_and_its_edits_still_win(
    server: Server, tmp_path: Path
) -> None:
    # Python -v says where each module's code came from: the bundle's cache, or its source.
    agent = write(
        tmp_path / "modules",
        {
            "main.py": (
                "import pathlib, subprocess, sys\n"
                "def load():\n"
                "    code = 'import helper; print(helper.VALUE)'\n"
                "    return subprocess.run([sys.executable, '-v', '-c', code],\n"
                "                          capture_output=True, text=True, check=True)\n"
                "first = load()\n"
                "pathlib.Path('helper.py').write_text('VALUE = \"edited\"\\n')\n"
                "second = load()\n"
                "cached = '/home/user/work/__pycache__/helper.cpython-311.pyc matches'\n"
                "compiled = 'code object from /home/user/work/helper.py'\n"
                "print(first.stdout.strip(), cached in first.stderr)\n"
                "print(second.stdout.strip(), compiled in second.stderr)\n"
            ),
            "helper.py": "VALUE = 'shipped'\n",
            "orch.yaml": "name: modules\nnetwork: false\n",
        },
    )
    assert server.cli("publish", str(agent)).returncode == 0
    run = run_json(server, "modules")
    assert run["status"] == "succeeded", run
    assert run["stdout"] == "shipped True\nedited True\n"


@pytest.mark.parametrize("locked", [True, False], ids=["npm-ci", "npm-install"])
def test_javascript_agent(server: Server, tmp_path: Path, locked: bool) -> None:
    files = {"index.js": NODE_MAIN, "package.json": json.dumps(PACKAGE)}
    if locked:
        files["package-lock.json"] = json.dumps(LOCK)
    write(tmp_path / "js", files)
    assert server.cli("publish", str(tmp_path / "js"), "--name", "counter").returncode == 0
    res = server.cli("run", "counter", "--input", '{"n": 5}')
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("node v20.") and "is-number(5)=true stdin=8" in res.stdout
    assert ("npm ci" if locked else "npm install") in res.stderr
    assert any(re.fullmatch(r"  added 1 package in [\d.]+m?s", line) for line in res.stderr.splitlines())
    assert "npm notice" not in res.stderr  # no "New major version of npm available" in a run's log
    assert "environment node (base)" in res.stderr


def test_docker_agent_sees_its_env_and_package(server: Server, tmp_path: Path) -> None:
    write(
        tmp_path / "d",
        {
            "main.py": (
                "import getpass, os, humanize, six\n"
                "note = open(os.path.expanduser('~/note.txt')).read().strip()\n"
                "print(os.environ['FROM_DOCKERFILE'], humanize.intcomma(1234567), getpass.getuser(), note)\n"
            ),
            # As an E2B template: root installs for everyone, then the sandbox user, by its name,
            # installs for itself (~/.local, found through HOME at run time) and writes in its home.
            "Dockerfile": (
                "FROM e2bdev/code-interpreter:latest\nRUN pip install --no-cache-dir six==1.16.0\n"
                "USER user\nRUN pip install --user --no-cache-dir humanize==4.9.0 \\\n"
                " && echo made-by-$(whoami) > /home/user/note.txt\n"
                "ENV FROM_DOCKERFILE=baked\n"
            ),
        },
    )
    res = server.cli("publish", str(tmp_path / "d"), "--name", "docked")
    assert "not used" in res.stdout  # without --docker the Dockerfile is ignored, and publish says so
    res = server.cli("publish", str(tmp_path / "d"), "--name", "docked", "--docker")
    assert res.returncode == 0 and "Environment docked-dockerfile is ready" in res.stdout, (
        res.stdout + res.stderr
    )
    r = run_json(server, "docked")
    assert r["status"] == "succeeded" and r["stdout"] == "baked 1,234,567 user made-by-user\n", r
    assert r["environment"]["name"] == "docked-dockerfile" and r["environment_rule"] == "dockerfile"
    res = server.cli("env", "delete", "docked-dockerfile", "--yes")
    assert res.returncode == 2 and "used by 1 agent (docked)" in res.stderr


def test_pinned_and_default_environments(server: Server, tmp_path: Path) -> None:
    write(
        tmp_path / "ml",
        {"main.py": "import numpy\nprint(numpy.arange(4).sum())\n", "orch.yaml": "environment: python-ml\n"},
    )
    assert server.cli("publish", str(tmp_path / "ml"), "--name", "ml").returncode == 0
    r = run_json(server, "ml")
    assert r["status"] == "succeeded" and r["stdout"] == "6\n", r
    assert (r["environment"]["name"], r["environment_rule"]) == ("python-ml", "pinned")

    probe = "import importlib.util as u\nprint(bool(u.find_spec('bs4')))\n"
    write(tmp_path / "plain", {"main.py": probe})
    assert server.cli("publish", str(tmp_path / "plain"), "--name", "plain").returncode == 0
    first = run_json(server, "plain")
    assert first["stdout"] == "False\n" and first["environment_rule"] == "base"
    res = server.cli("env", "set-default", "python-scraping")
    assert "1 agent without its own Dockerfile" in res.stdout
    second = run_json(server, "plain")
    assert second["status"] == "succeeded", second
    assert second["stdout"] == "True\n"
    assert (second["environment"]["name"], second["environment_rule"]) == (
        "python-scraping",
        "workspace-default",
    )
    r = run_json(server, "ml")  # a pin beats the default
    assert r["environment_rule"] == "pinned"


def test_hostile_agents_end_in_recorded_failures(server: Server, tmp_path: Path) -> None:
    write(
        tmp_path / "memory",
        {
            "main.py": "x = bytearray(400 * 1024 * 1024)\nprint('survived')\n",
            "orch.yaml": "resources: {memory: 128Mi}\n",
        },
    )
    write(
        tmp_path / "forks",
        {
            "main.py": "import os, time\nwhile True:\n    os.fork()\n",
            "orch.yaml": "resources: {pids: 64, timeout: 60}\n",
        },
    )
    write(tmp_path / "loop", {"main.py": "while True:\n    pass\n", "orch.yaml": "resources: {timeout: 3}\n"})
    write(
        tmp_path / "escape",
        {
            "main.py": (
                "import os\n"
                "for path in ('/etc/evil', '/opt/orch/bundle/evil', '/usr/local/evil'):\n"
                "    try:\n"
                "        open(path, 'w').write('x')\n"
                "        print('WROTE', path)\n"
                "    except OSError as e:\n"
                "        print('refused', path, e.errno)\n"
                "open('ok.txt', 'w').write('the working directory is writable')\n"
                "print(open('ok.txt').read())\n"
            ),
            "orch.yaml": "network: false\n",
        },
    )
    for name in ("memory", "forks", "loop", "escape"):
        assert server.cli("publish", str(tmp_path / name), "--name", name).returncode == 0
    r = run_json(server, "memory")
    assert (r["status"], r["reason"]) == ("failed", "killed: memory limit 128 MiB"), r
    r = run_json(server, "forks")
    assert r["status"] in ("failed", "timed_out"), r
    assert "process limit (64) reached" in (r["reason"] or "") or r["status"] == "timed_out", r
    r = run_json(server, "loop")
    assert (r["status"], r["reason"]) == ("timed_out", "timed out after 3 s"), r
    r = run_json(server, "escape")
    assert r["status"] == "succeeded", r
    assert "WROTE" not in r["stdout"] and r["stdout"].count("refused") == 3
    assert "the working directory is writable" in r["stdout"]
    assert not os.path.exists("/etc/evil")
    # Every sandbox is gone, and the machine still runs things.
    assert run_json(server, "escape")["status"] == "succeeded"


def test_bad_bundles_are_refused(server: Server, tmp_path: Path) -> None:
    write(tmp_path / "none", {"README.md": "nothing to run"})
    res = server.cli("publish", str(tmp_path / "none"))
    assert res.returncode == 2 and "entrypoint" in res.stderr.lower()
    write(tmp_path / "mixed", {"main.py": "", "index.js": ""})
    res = server.cli("publish", str(tmp_path / "mixed"))
    assert res.returncode == 2 and "main.py" in res.stderr and "index.js" in res.stderr
    write(tmp_path / "link", {"main.py": ""})
    (tmp_path / "link" / "secrets").symlink_to("/etc")
    res = server.cli("publish", str(tmp_path / "link"))
    assert res.returncode == 2 and "secrets" in res.stderr
    write(tmp_path / "big", {"main.py": ""})
    (tmp_path / "big" / "blob.bin").write_bytes(os.urandom(51 * 1024 * 1024))
    res = server.cli("publish", str(tmp_path / "big"))
    assert res.returncode == 2 and ".orchignore" in res.stderr
    write(tmp_path / "yaml", {"main.py": "", "orch.yaml": "resources:\n  memory: lots\n"})
    res = server.cli("publish", str(tmp_path / "yaml"))
    assert res.returncode == 2 and "line 2" in res.stderr and "memory" in res.stderr
    assert json.loads(server.cli("agents", "list", "--json").stdout) == []
    assert "Traceback" not in res.stderr


def _wait_status(server: Server, run_id: str, wanted: set[str], timeout: float = 120) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = server.get(f"/v1/runs/{run_id}")
        if run["status"] in wanted:
            return run
        time.sleep(0.2)
    raise AssertionError(f"{run_id} never reached {wanted}: {run}")


def _containers(run_id: str) -> list[str]:
    return sandboxes(run_id)


def test_cancel_and_server_restart(make_server, tmp_path: Path) -> None:
    server: Server = make_server()
    server.settings = {"ORCH_RUN_WORKERS": "2"}  # two runs fill it; a third waits
    server.start()
    write(tmp_path / "sleepy", {"main.py": "import time\nprint('started', flush=True)\ntime.sleep(120)\n"})
    write(tmp_path / "quick", {"main.py": "print('quick')\n"})
    for name in ("sleepy", "quick"):
        assert server.cli("publish", str(tmp_path / name)).returncode == 0

    # Cancel a running run: its sandbox is stopped and removed.
    run_id = server.cli("run", "sleepy", "--detach").stdout.strip()
    _wait_status(server, run_id, {"running"})
    res = server.cli("runs", "cancel", run_id)
    assert "cancelled" in res.stderr, res.stderr
    assert _containers(run_id) == []

    # Two runs hold both workers, a third waits queued; then the server is killed.
    busy = [server.cli("run", "sleepy", "--detach").stdout.strip() for _ in range(2)]
    for b in busy:
        _wait_status(server, b, {"running"})
    queued = server.cli("run", "quick", "--detach").stdout.strip()
    assert server.get(f"/v1/runs/{queued}")["status"] == "queued"
    server.kill()
    server.start()
    for b in busy:
        run = _wait_status(server, b, {"failed"})
        assert run["reason"] == "the server stopped while the run was running"
        assert _containers(b) == []
    run = _wait_status(server, queued, {"succeeded", "failed"})
    assert run["status"] == "succeeded"
    assert server.cli("runs", "logs", queued).stdout == "quick\n"


def test_a_stopping_server_answers_its_followers_at_once(server: Server, tmp_path: Path) -> None:
    """uvicorn waits for every request in flight before it stops; a follower's long poll (up to
    30 s) must not hold a SIGTERMed server up."""
    import signal
    import threading

    write(tmp_path / "sleepy", {"main.py": "import time\nprint('started', flush=True)\ntime.sleep(120)\n"})
    assert server.cli("publish", str(tmp_path / "sleepy")).returncode == 0
    run_id = server.cli("run", "sleepy", "--detach").stdout.strip()
    _wait_status(server, run_id, {"running"})
    logs = server.get(f"/v1/runs/{run_id}/logs")
    while "started" not in logs["stdout"]:  # bounded by the long poll's own wait
        logs = server.get(f"/v1/runs/{run_id}/logs", params={"wait": 10})
    offsets = server.get(f"/v1/runs/{run_id}/logs")["offsets"]
    answers: list[int] = []

    def follow() -> None:  # caught up, so it waits the whole 30 s unless told to answer
        with server.api() as api:
            answers.append(api.get(f"/v1/runs/{run_id}/logs", params={**offsets, "wait": 30}).status_code)

    follower = threading.Thread(target=follow)
    follower.start()
    follower.join(2)
    assert answers == [] and server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(15)  # well within the follower's wait; before, it waited all of it
    follower.join(5)
    # uvicorn ends by raising the signal it caught again, as a process stopped by it would.
    assert answers == [200] and server.proc.returncode in (0, -signal.SIGTERM)
