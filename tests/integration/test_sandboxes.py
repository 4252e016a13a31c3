"""Sandboxes on demand end to end: `orch sandbox` and /v1/sandboxes against a real server that holds
them open on real runc."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from orch.engine import PodmanEngine
from orch.sandbox import runc
from tests.integration.conftest import RUNTIME_ROOT, Server, runtime_sandboxes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")


def create(server: Server, *args: str) -> dict:
    res = server.cli("sandbox", "create", "--json", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def run(server: Server, sandbox_id: str, *command: str, timeout: float | None = None) -> dict:
    with server.api() as api:
        resp = api.post(
            f"/v1/sandboxes/{sandbox_id}/exec",
            json={"command": list(command), "timeout": timeout},
            timeout=120,
        )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def held(server: Server, sandbox_id: str) -> list[str]:
    """The runtime's containers of this sandbox (in either runtime)."""
    return [n for n in runtime_sandboxes(f"orch-{server.instance}-sb-") if n.endswith(sandbox_id)]


def processes(server: Server, sandbox_id: str, word: str) -> int:
    """How many processes in the sandbox have `word` in their command line (the looker excluded:
    its pattern, such as `[s]leep 1`, does not match itself)."""
    pattern = f"[{word[0]}]{word[1:]}"
    script = (
        f'for c in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$c"; echo; done | grep -c -- "{pattern}" || true'
    )
    return int(run(server, sandbox_id, "sh", "-c", script)["stdout"].strip())


def test_create_exec_files_and_remove(server: Server, tmp_path: Path) -> None:
    sb = create(server)
    assert (sb["status"], sb["environment"]["name"], sb["isolation"]) == ("running", "python", "runc")
    assert len(held(server, sb["id"])) == 1
    res = server.cli("sandbox", "exec", sb["id"], "--", "echo", "hello", "sandbox")
    assert (res.returncode, res.stdout) == (0, "hello sandbox\n")
    res = server.cli("sandbox", "exec", sb["id"], "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    data = json.loads(server.cli("sandbox", "exec", sb["id"], "--json", "--", "pwd").stdout)
    assert (data["exit_code"], data["stdout"]) == (0, "/home/user\n")
    res = server.cli("sandbox", "exec", sb["id"], "--", "no-such-program")
    assert res.returncode == 127 and "no-such-program: command not found" in res.stderr
    # Files: in and out as bytes, through the CLI and the API.
    blob = os.urandom(1024 * 1024) + b"\x00end"
    (tmp_path / "blob").write_bytes(blob)
    res = server.cli("sandbox", "cp", str(tmp_path / "blob"), f"{sb['id']}:deep/dir/blob")
    assert res.returncode == 0, res.stderr
    assert run(server, sb["id"], "sha256sum", "/home/user/deep/dir/blob")["stdout"].split()[0] == (
        __import__("hashlib").sha256(blob).hexdigest()
    )
    res = server.cli("sandbox", "cp", f"{sb['id']}:/home/user/deep/dir/blob", str(tmp_path / "back"))
    assert res.returncode == 0 and (tmp_path / "back").read_bytes() == blob
    owner = run(server, sb["id"], "stat", "-c", "%u:%g %a", "/home/user/deep/dir/blob")["stdout"]
    assert owner == "1000:1000 644\n"  # written by the sandbox user, with its umask
    with server.api() as api:
        assert api.get(f"/v1/sandboxes/{sb['id']}/files", params={"path": "nope"}).status_code == 404
        refused = api.put(f"/v1/sandboxes/{sb['id']}/files", params={"path": "/etc/evil"}, content=b"x")
        assert refused.status_code == 400 and "Permission denied" in refused.json()["message"]
    listed = json.loads(server.cli("sandbox", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [sb["id"]]
    assert server.cli("sandbox", "rm", sb["id"]).returncode == 0
    assert held(server, sb["id"]) == []
    assert not (RUNTIME_ROOT / "sandboxes" / f"orch-{server.instance}-sb-{sb['id']}").exists()
    shown = server.get(f"/v1/sandboxes/{sb['id']}")
    assert (shown["status"], shown["reason"]) == ("removed", "removed on request")


def test_a_command_has_the_process_fields_of_pid_1(server: Server) -> None:
    sb = create(server)
    out = run(server, sb["id"], "cat", "/proc/self/status", "/proc/1/status")["stdout"]
    self_part, init_part = out.split("Name:")[1:3]

    def fields(text: str) -> dict[str, str]:
        found = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k: found[k].strip() for k in FIELDS}

    mine, init = fields(self_part), fields(init_part)
    assert mine == init, (mine, init)
    assert mine["Uid"].split()[0] == "1000" and mine["CapEff"] == mine["CapBnd"] == "0000000000000000"
    assert (mine["NoNewPrivs"], mine["Seccomp"]) == ("1", "2")  # seccomp in filter mode, as PID 1


def test_commands_at_once_and_a_timeout_that_kills(server: Server) -> None:
    sb = create(server)
    results: dict[int, dict] = {}

    def go(i: int) -> None:
        results[i] = run(server, sb["id"], "sh", "-c", f"sleep 2; echo {i}")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - began < 6  # side by side, not one after another
    assert {i: r["stdout"] for i, r in results.items()} == {i: f"{i}\n" for i in range(4)}
    began = time.monotonic()
    timed = run(server, sb["id"], "sh", "-c", "sleep 300 & (sleep 301 &); echo started; sleep 302", timeout=1)
    assert (timed["exit_code"], timed["timed_out"], timed["stdout"]) == (124, True, "started\n")
    assert time.monotonic() - began < 10
    # Its processes went with it, the orphaned one too; the sandbox goes on.
    assert processes(server, sb["id"], "sleep 30") == 0
    res = server.cli("sandbox", "exec", sb["id"], "--timeout", "1", "--", "sleep", "30")
    assert res.returncode == 124 and "timed out after 1 s" in res.stderr
    assert run(server, sb["id"], "true")["exit_code"] == 0


def test_a_client_that_goes_away_stops_its_command(server: Server) -> None:
    sb = create(server)
    body = {"command": ["sh", "-c", "echo started; exec sleep 123"], "timeout": 200}
    headers = {"Accept": "application/x-ndjson"}
    with (
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as api,
        api.stream("POST", f"/v1/sandboxes/{sb['id']}/exec", json=body, headers=headers, timeout=30) as resp,
    ):
        lines = resp.iter_lines()  # kept: a dropped iterator closes the connection
        first = json.loads(next(lines))
        assert first == {"stream": "stdout", "data": "started\n"}
        deadline = time.monotonic() + 10
        while processes(server, sb["id"], "sleep 123") != 1:  # `started` comes before the exec
            assert time.monotonic() < deadline, "the command never ran"
            time.sleep(0.2)
    deadline = time.monotonic() + 20
    while processes(server, sb["id"], "sleep 123"):
        assert time.monotonic() < deadline, "the command outlived its client"
        time.sleep(0.5)


def test_a_command_cut_by_its_sandbox_s_removal_says_so(server: Server) -> None:
    """Not a bare 137, which an out-of-memory kill also gives: the runtime's teardown ends the
    command, and its answer says why."""
    sb = create(server)

    def remove() -> None:  # from another shell, once the command runs
        deadline = time.monotonic() + 20
        while processes(server, sb["id"], "sleep 123") != 1:
            assert time.monotonic() < deadline, "the command never ran"
            time.sleep(0.2)
        assert server.cli("sandbox", "rm", sb["id"]).returncode == 0

    other = threading.Thread(target=remove)
    other.start()
    res = server.cli("sandbox", "exec", sb["id"], "--", "sh", "-c", "echo start; exec sleep 123")
    other.join(60)
    assert (res.returncode, res.stdout) == (2, "start\n"), res.stderr
    assert f"The sandbox {sb['id']} was removed while the command ran (removed on request)." in res.stderr


def test_files_into_directories_and_commands_that_cannot_run(server: Server, tmp_path: Path) -> None:
    sb = create(server)
    local = tmp_path / "notes.txt"
    local.write_text("hi\n")
    for target, found in (("/tmp", "/tmp/notes.txt"), (".", "/home/user/notes.txt")):
        res = server.cli("sandbox", "cp", str(local), f"{sb['id']}:{target}")
        assert res.returncode == 0 and f"{sb['id']}:{found} (3 bytes)" in res.stderr, res.stderr
        assert run(server, sb["id"], "cat", found)["stdout"] == "hi\n"
    res = server.cli("sandbox", "cp", str(local), f"{sb['id']}:sub/dir/")
    assert res.returncode == 2 and "No directory /home/user/sub/dir in the sandbox." in res.stderr
    assert run(server, sb["id"], "test", "-e", "/home/user/sub")["exit_code"] == 1  # nothing made
    res = server.cli("sandbox", "cp", f"{sb['id']}:/tmp", str(tmp_path / "out"))
    assert res.returncode == 2 and "Could not read /tmp in the sandbox: Is a directory." in res.stderr
    assert "can write" not in res.stderr
    res = server.cli("sandbox", "exec", sb["id"], "--", "/etc/passwd")
    assert (res.returncode, res.stderr) == (126, "orch: /etc/passwd: Permission denied\n")


def test_streamed_output_comes_as_it_is_written(server: Server) -> None:
    sb = create(server)
    body = {"command": ["sh", "-c", "echo one; sleep 2; echo two >&2"]}
    seen: list[tuple[float, dict]] = []
    began = time.monotonic()
    with (
        server.api() as api,
        api.stream(
            "POST", f"/v1/sandboxes/{sb['id']}/exec", json=body, headers={"Accept": "application/x-ndjson"}
        ) as resp,
    ):
        for line in resp.iter_lines():
            seen.append((time.monotonic() - began, json.loads(line)))
    assert [e for _, e in seen[:2]] == [
        {"stream": "stdout", "data": "one\n"},
        {"stream": "stderr", "data": "two\n"},
    ]
    assert seen[0][0] < 1.5 <= seen[1][0]  # the first line did not wait for the second
    assert seen[-1][1]["exit_code"] == 0


def test_an_idle_sandbox_is_removed(server: Server) -> None:
    sb = create(server, "--timeout", "2")
    deadline = time.monotonic() + 20
    while (shown := server.get(f"/v1/sandboxes/{sb['id']}"))["status"] == "running":
        assert time.monotonic() < deadline, "the idle sandbox was not removed"
        time.sleep(0.3)
    assert (shown["status"], shown["reason"]) == ("removed", "idle for 2 s")
    while held(server, sb["id"]):  # recorded first (no command goes in from then on), then torn down
        assert time.monotonic() < deadline, "the idle sandbox was recorded removed but left running"
        time.sleep(0.1)
    res = server.cli("sandbox", "exec", sb["id"], "--", "true")
    assert res.returncode == 2 and "is removed (idle for 2 s)" in res.stderr


def test_an_environment_deleted_under_an_open_sandbox_goes_when_it_ends(
    server: Server, tmp_path: Path
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM e2bdev/code-interpreter:latest\nENV MARK=deleted-under\n")
    assert server.cli("env", "create", "-f", str(dockerfile), "-n", "doomed").returncode == 0
    tag = json.loads(server.cli("env", "status", "doomed", "--json").stdout)["image"]
    engine = PodmanEngine()
    image = engine.inspect_image(tag)
    assert image is not None
    sb = create(server, "--env", "doomed")
    assert run(server, sb["id"], "sh", "-c", "echo $MARK")["stdout"] == "deleted-under\n"
    res = server.cli("env", "delete", "doomed", "--yes")
    assert res.returncode == 0, res.stderr
    # Its name goes at once (podman rmi alone was refused: the sandbox holds the image)...
    assert engine.inspect_image(tag) is None and engine.inspect_image(image.id) is not None
    assert run(server, sb["id"], "true")["exit_code"] == 0  # ...and the sandbox goes on
    assert server.cli("sandbox", "rm", sb["id"]).returncode == 0
    deadline = time.monotonic() + 30
    while engine.inspect_image(image.id) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine.inspect_image(image.id) is None  # the image went with the sandbox


def test_the_workspace_limit_and_bad_input(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    server.settings["ORCH_MAX_SANDBOXES"] = "2"
    server.settings["ORCH_RUN_MEMORY"] = "1Gi"
    server.start()
    first, _second = create(server), create(server)
    with server.api() as api:  # each holds its 512 MiB of the sandboxes' memory budget
        metrics = api.get("/metrics").text
    assert 'orch_run_memory_bytes{state="sandboxes"} 1.073741824e+09' in metrics
    res = server.cli("sandbox", "create")
    assert res.returncode == 2
    assert "This workspace already holds 2 sandboxes open, its limit (2)." in res.stderr
    assert "orch sandbox rm ID" in res.stderr
    with server.api() as api:
        resp = api.post("/v1/sandboxes", json={})
        assert resp.status_code == 429 and resp.json()["error"] == "limit_reached"
        for body, status in (
            ({"memory": "1Ki"}, 400),
            ({"memory": "2Gi"}, 400),  # more than run_memory, all sandboxes' budget
            ({"cpus": -1}, 400),
            ({"environment": "no-such-env"}, 404),
            ({"timeout": "soon"}, 422),
        ):
            resp = api.post("/v1/sandboxes", json=body)
            assert resp.status_code == status and resp.json()["message"], (body, resp.text)
        url = f"/v1/sandboxes/{first['id']}"
        for body in (
            {"command": []},
            {"command": ["true"], "timeout": -1},
            {"command": ["true"], "workdir": "/nope"},
        ):
            resp = api.post(f"{url}/exec", json=body)
            assert 400 <= resp.status_code < 500 and resp.json()["message"].endswith("."), (body, resp.text)
        assert api.get(f"{url}/files", params={"path": ""}).status_code == 400
        assert api.put(f"{url}/files", params={"path": "a\x00b"}, content=b"x").status_code == 400
        assert api.get("/v1/sandboxes/sbx_nothere00").status_code == 404
    for args in (
        ("sandbox", "create", "--memory", "lots"),
        ("sandbox", "exec", first["id"], "--env", "NOEQUALS", "--", "true"),
        ("sandbox", "cp", "a", "b"),
        ("sandbox", "rm", "sbx_nothere00"),
    ):
        res = server.cli(*args)
        assert res.returncode == 2 and res.stderr.strip() and "Traceback" not in res.stderr, args
    assert len(json.loads(server.cli("sandbox", "list", "--json").stdout)) == 2  # nothing changed
    assert server.cli("sandbox", "rm", first["id"]).returncode == 0  # its 512 MiB given back
    with server.api() as api:
        metrics = api.get("/metrics").text
    assert 'orch_run_memory_bytes{state="sandboxes"} 5.36870912e+08' in metrics


def test_a_stopped_server_leaves_nothing(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    server.start()
    sb = create(server, "--network")
    assert run(server, sb["id"], "true")["exit_code"] == 0
    server.stop()
    assert "removed 1 sandbox on demand that this server held" in server.log.read_text()
    assert held(server, sb["id"]) == []
    assert not list((RUNTIME_ROOT / "sandboxes").glob(f"orch-{server.instance}-*"))
    assert not [p for p in Path("/run/netns").glob(f"orch-{server.instance}-*")]
    server.start()
    shown = server.get(f"/v1/sandboxes/{sb['id']}")
    assert (shown["status"], shown["reason"]) == ("removed", "the server stopped")


def test_a_sandbox_at_its_process_limit_refuses_commands_with_a_sentence(server: Server) -> None:
    """The tester's fork bomb: the processes it left took every place of the sandbox's 256, and a
    new command came back with runc's raw `read init-p: connection reset by peer` and a fix
    pointing at a server log that had nothing, or started and failed at its own fork. At the
    limit (its cgroup's pids.current at pids.max) a command is now refused with a sentence."""
    sb = create(server)["id"]
    name = f"orch-{server.instance}-sb-{sb}"
    # In the background of a command that ends: forks until a fork fails, its children asleep.
    bomb = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(1000)\n"
        "    except OSError:\n"
        "        time.sleep(1000)\n"
    )
    assert run(server, sb, "sh", "-c", 'python3 -c "$0" >/dev/null 2>&1 &', bomb)["exit_code"] == 0
    folder = runc.sandbox_cgroup(name, "pids")
    deadline = time.monotonic() + 60
    while int((folder / "pids.current").read_text()) < int((folder / "pids.max").read_text()):
        assert time.monotonic() < deadline, "the bomb never reached the sandbox's process limit"
        time.sleep(0.1)
    with server.api() as api:
        for command in (["true"], ["sh", "-c", "echo hi; ls | wc -l"]):
            resp = api.post(f"/v1/sandboxes/{sb}/exec", json={"command": command}, timeout=60)
            assert resp.status_code == 409, resp.text
            said = resp.json()
            assert said["message"] == "The sandbox is at its process limit (256): no command can start."
            assert said["fix"] == "Wait for its processes to end, or remove the sandbox and create another."
        resp = api.get(f"/v1/sandboxes/{sb}/files", params={"path": "/etc/hostname"}, timeout=60)
        assert resp.status_code == 409 and "process limit (256)" in resp.json()["message"], resp.text
        assert api.delete(f"/v1/sandboxes/{sb}").status_code == 204
    assert held(server, sb) == []
    assert not folder.exists()


def test_a_write_that_fills_the_disk_leaves_nothing_and_says_why(server: Server, tmp_path: Path) -> None:
    """A sandbox's disk is half its memory limit: a copy larger than that left 16 MiB of it and
    blamed the path."""
    sb = create(server, "--memory", "32Mi")
    big, small = tmp_path / "big", tmp_path / "small"
    big.write_bytes(os.urandom(24 * 2**20))
    small.write_text("kept\n")
    assert server.cli("sandbox", "cp", str(small), f"{sb['id']}:big").returncode == 0
    res = server.cli("sandbox", "cp", str(big), f"{sb['id']}:big")
    assert res.returncode == 2, res.stderr
    assert "Could not write /home/user/big in the sandbox: its disk is full" in res.stderr
    assert "--memory" in res.stderr and "check the path" not in res.stderr
    listed = run(server, sb["id"], "sh", "-c", "ls -A; cat big")["stdout"]
    assert listed.split() == ["big", "kept"]  # the file it would replace, as it was; no part
    res = server.cli("sandbox", "cp", str(small), f"{sb['id']}:a/../../../../tmp/t")
    assert res.returncode == 0 and f"{sb['id']}:/tmp/t (5 bytes)" in res.stderr, res.stderr
    assert run(server, sb["id"], "test", "-e", "/home/user/a")["exit_code"] == 1


def test_a_command_killed_at_the_memory_limit_says_so(server: Server) -> None:
    """An exec killed at the sandbox's memory limit ended 137 with nothing said, as if the
    command had killed itself (found by a tester)."""
    sb = create(server, "--memory", "64Mi")
    hog = run(server, sb["id"], "python3", "-c", "a = bytearray(10**9)")
    assert hog["exit_code"] == 137, hog
    assert "orch: killed: the sandbox's memory limit (64 MiB) was reached" in hog["stderr"], hog
    own = run(server, sb["id"], "sh", "-c", "kill -9 $$")  # its own kill: said as such, not as memory
    assert own["exit_code"] == 137 and "memory limit" not in own["stderr"], own
