"""Agents and runs through the API, in-process, on the fake engine."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from orch import config
from orch.bundle import pack_directory
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.models import RunStatus
from orch.services.platform import Platform
from orch.store.schema import RunRow
from orch.workers import runs as run_worker
from tests.conftest import drain, drain_runs

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\nENV FROM_DOCKERFILE=yes\n"


def bundle(tmp_path: Path, files: dict[str, str], name: str = "agent") -> bytes:
    root = tmp_path / name
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return pack_directory(root).data


def publish(api: httpx.Client, name: str, data: bytes, docker: bool = False) -> httpx.Response:
    return api.post(
        f"/v1/agents/{name}/versions",
        params={"docker": docker},
        content=data,
        headers={"Content-Type": "application/gzip"},
    )


def run(api: httpx.Client, platform: Platform, agent: str, **body: object) -> dict:
    resp = api.post("/v1/runs", json={"agent": agent, **body})
    assert resp.status_code == 201, resp.text
    drain_runs(platform)
    return api.get(f"/v1/runs/{resp.json()['id']}").json()


@pytest.fixture
def hello(api: httpx.Client, tmp_path: Path) -> dict:
    resp = publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"}))
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_publish_makes_immutable_versions(api: httpx.Client, tmp_path: Path, hello: dict) -> None:
    v1 = hello["version"]
    assert (v1["version"], v1["entrypoint"], v1["language"]) == (1, "main.py", "python")
    assert v1["command"] == ["python", "main.py"]
    resp = publish(
        api, "hello", bundle(tmp_path, {"main.py": "print('v2')\n", "requirements.txt": "six\n"}, "b")
    )
    v2 = resp.json()["version"]
    assert v2["version"] == 2 and v2["dependency_files"] == ["requirements.txt"]
    assert v2["bundle_sha256"] != v1["bundle_sha256"]
    shown = api.get("/v1/agents/hello").json()
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    assert [a["name"] for a in api.get("/v1/agents").json()] == ["hello"]


def test_dockerfile_without_docker_flag_is_not_used(api: httpx.Client, tmp_path: Path) -> None:
    resp = publish(api, "d", bundle(tmp_path, {"main.py": "", "Dockerfile": DOCKERFILE}))
    assert resp.status_code == 201
    assert "not used" in resp.json()["notes"][0]
    assert "`orch publish DIR --docker`" in resp.json()["notes"][0]  # how to ask for it
    assert resp.json()["version"]["dockerfile_environment"] is None


def test_an_unused_dockerfile_that_is_not_valid_is_not_advised(api: httpx.Client, tmp_path: Path) -> None:
    """Found by a tester: the note advised `--docker` for a Dockerfile that publish then refused."""
    files = {"main.py": "", "Dockerfile": "FROM python\nCOPY x /y\n"}
    resp = publish(api, "d", bundle(tmp_path, files))
    assert resp.status_code == 201
    (note,) = resp.json()["notes"]
    assert note.startswith(
        "The bundle has a Dockerfile, which was not used; it is not valid, and a build of it would be "
        "refused (2 errors: line 1 FROM: "
    )
    assert "--docker" not in note


def test_an_unused_dockerfile_s_note_names_each_of_its_errors(api: httpx.Client, tmp_path: Path) -> None:
    """Not its first error alone: fixing one at a time took a publish each (found by a tester)."""
    lines = ["FROM python", "MAINTAINER me", "COPY x /y", *["ADD a /b"] * 6]
    resp = publish(api, "d", bundle(tmp_path, {"main.py": "", "Dockerfile": "\n".join(lines) + "\n"}))
    assert resp.status_code == 201
    (note,) = resp.json()["notes"]
    found = api.post("/v1/environments/validate", json={"dockerfile": "\n".join(lines) + "\n"}).json()
    errors = [f for f in found["findings"] if f["severity"] == "error"]
    assert len(errors) > 5, errors
    assert f"({len(errors)} errors: line 1 FROM: " in note, note
    for f in errors[:5]:
        assert f"line {f['line']} {f['instruction']}: {f['message'].rstrip('.')}" in note
    assert f"and {len(errors) - 5} more (orch env validate says all)" in note


def test_docker_publish_builds_and_reuses(
    api: httpx.Client, tmp_path: Path, platform: Platform, fake_engine: FakeEngine
) -> None:
    first = publish(
        api, "crawler", bundle(tmp_path, {"main.py": "", "Dockerfile": DOCKERFILE}, "a"), docker=True
    )
    env = first.json()["version"]["dockerfile_environment"]
    assert env["name"] == "crawler-dockerfile"
    assert drain(platform) == 1
    second = publish(
        api, "digest", bundle(tmp_path, {"main.py": "", "Dockerfile": DOCKERFILE}, "b"), docker=True
    )
    assert second.json()["version"]["dockerfile_environment"] == env  # same Dockerfile: same environment
    assert drain(platform) == 0 and len(fake_engine.builds) == 1
    refused = api.delete(f"/v1/environments/{env['name']}")
    assert refused.status_code == 409
    assert "2 agents (crawler, digest)" in refused.json()["message"]


def test_bad_bundles_store_nothing(api: httpx.Client, tmp_path: Path) -> None:
    cases = [
        bundle(tmp_path, {"README.md": "no code"}, "none"),
        bundle(tmp_path, {"main.py": "", "index.js": ""}, "mixed"),
        b"not a tarball at all",
        b"",
    ]
    for data in cases:
        resp = publish(api, "bad", data)
        assert resp.status_code == 400, resp.text
        assert resp.json()["message"] and resp.json()["fix"]
    resp = publish(
        api, "bad", bundle(tmp_path, {"main.py": "", "Dockerfile": "FROM ubuntu\n"}, "df"), docker=True
    )
    assert resp.status_code == 422
    resp = publish(api, "bad", bundle(tmp_path, {"main.py": "", "orch.yaml": "environment: nope\n"}, "pin"))
    assert resp.status_code == 400 and "nope" in resp.json()["message"]
    resp = publish(api, "Bad Name", bundle(tmp_path, {"main.py": ""}, "ok"))
    assert resp.status_code == 400
    assert api.get("/v1/agents").json() == []
    assert len([e for e in api.get("/v1/environments").json() if e["kind"] == "custom"]) == 0


def test_run_succeeds_with_output_and_base_rule(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, hello: dict
) -> None:
    def behave(spec: ContainerSpec, out, err) -> ContainerExit:
        out(b"hello from " + spec.env["ORCH_INPUT"].encode())
        err(b"a warning\n")
        return ContainerExit(0)

    fake_engine.behaviour = behave
    r = run(api, platform, "hello", input='{"x": 1}', env={"MODE": "test"})
    assert r["status"] == "succeeded" and r["exit_code"] == 0
    assert r["environment"]["name"] == "python" and r["environment_rule"] == "base"
    logs = api.get(f"/v1/runs/{r['id']}/logs").json()
    assert logs["stdout"] == 'hello from {"x": 1}' and logs["stderr"] == "a warning\n"
    assert "→ environment python (base)" in logs["log"]
    assert logs["run"] == api.get(f"/v1/runs/{r['id']}").json()  # an ended run's answer carries it
    spec = fake_engine.containers[-1]
    assert spec.stdin == b'{"x": 1}' and spec.env["MODE"] == "test"
    assert not spec.read_only and spec.user == "1000:1000" and spec.memory_bytes == 512 * 1024 * 1024
    assert spec.labels["org.orch.instance"] == platform.instance


def test_environment_rules_in_order(
    api: httpx.Client, platform: Platform, tmp_path: Path, hello: dict
) -> None:
    assert run(api, platform, "hello")["environment_rule"] == "base"
    api.put("/v1/workspace/default-environment", json={"environment": "python-scraping"})
    r = run(api, platform, "hello")
    assert (r["environment"]["name"], r["environment_rule"]) == ("python-scraping", "workspace-default")
    publish(api, "pinned", bundle(tmp_path, {"main.py": "", "orch.yaml": "environment: python-ml\n"}, "p"))
    r = run(api, platform, "pinned")
    assert (r["environment"]["name"], r["environment_rule"]) == ("python-ml", "pinned")
    publish(api, "docker", bundle(tmp_path, {"main.py": "", "Dockerfile": DOCKERFILE}, "d"), docker=True)
    r = run(api, platform, "docker")
    assert (r["environment"]["name"], r["environment_rule"]) == ("docker-dockerfile", "dockerfile")
    assert r["status"] == "succeeded"


def test_limits_give_reasons(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, hello: dict
) -> None:
    fake_engine.behaviour = lambda spec, out, err: ContainerExit(137, oom_killed=True)
    r = run(api, platform, "hello")
    assert (r["status"], r["reason"]) == ("failed", "killed: memory limit 512 MiB")
    fake_engine.behaviour = lambda spec, out, err: ContainerExit(137, timed_out=True)
    r = run(api, platform, "hello", timeout=30)
    assert (r["status"], r["reason"]) == ("timed_out", "timed out after 30 s")

    # The process limit is named when the launcher found the sandbox's cgroup at it (a thread
    # it could not start), and never from the agent's words (an EAGAIN of its own).
    def thread_bomb(spec, out, err) -> ContainerExit:
        err(b"RuntimeError: can't start new thread\n")
        return ContainerExit(1, pids_limit_reached=True)

    fake_engine.behaviour = thread_bomb
    r = run(api, platform, "hello")
    assert (r["status"], r["reason"]) == ("failed", "exit code 1: process limit (256) reached")

    def fetch_failed(spec, out, err) -> ContainerExit:
        err(b"HTTP fetch failed: EAGAIN\n")
        return ContainerExit(2)

    fake_engine.behaviour = fetch_failed
    r = run(api, platform, "hello")
    assert (r["status"], r["reason"]) == ("failed", "exit code 2")
    fake_engine.behaviour = lambda spec, out, err: ContainerExit(137)  # sys.exit(137), or a SIGKILL
    r = run(api, platform, "hello")
    assert (
        r["status"] == "failed" and r["reason"] == "exit code 137: killed by SIGKILL, or it exited with 137"
    )
    assert "killed (SIGKILL)" not in r["reason"]


def test_dependencies_install_once(
    api: httpx.Client, platform: Platform, tmp_path: Path, fake_engine: FakeEngine
) -> None:
    publish(api, "deps", bundle(tmp_path, {"main.py": "", "requirements.txt": "six==1.16.0\n"}))
    first = run(api, platform, "deps")
    second = run(api, platform, "deps")
    assert (first["deps"], second["deps"]) == ("installed", "cached")
    installs = [c for c in fake_engine.containers if c.name.endswith("-deps")]
    assert len(installs) == 1 and installs[0].network
    log = api.get(f"/v1/runs/{second['id']}/logs").json()["log"]
    assert "cached, nothing to install" in log
    # A changed dependency file installs again.
    publish(api, "deps", bundle(tmp_path, {"main.py": "", "requirements.txt": "six==1.15.0\n"}, "v2"))
    assert run(api, platform, "deps")["deps"] == "installed"


def test_failed_install_fails_the_run(
    api: httpx.Client, platform: Platform, tmp_path: Path, fake_engine: FakeEngine
) -> None:
    def behave(spec: ContainerSpec, out, err) -> ContainerExit:
        if spec.name.endswith("-deps"):
            err(b"ERROR: No matching distribution found for nosuchpackage\n")
            return ContainerExit(1)
        return ContainerExit(0)

    fake_engine.behaviour = behave
    publish(api, "broken", bundle(tmp_path, {"main.py": "", "requirements.txt": "nosuchpackage\n"}))
    r = run(api, platform, "broken")
    assert r["status"] == "failed" and "Installing requirements.txt failed" in r["reason"]
    assert "No matching distribution" in api.get(f"/v1/runs/{r['id']}/logs").json()["log"]


def test_a_loop_run_on_a_server_that_cannot_hold_a_sandbox_fails_with_a_sentence(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """The fake engine has no launcher to hold a loop's sandbox open (tests/api/test_loop_runs.py
    gives it a fake holder): the run says so, rather than crash."""
    loop = "loop:\n  model: x\n  provider: openai\n  api_key_secret: OPENAI_API_KEY\n"
    resp = publish(api, "loopy", bundle(tmp_path, {"main.py": "", "orch.yaml": loop}))
    assert resp.status_code == 201
    assert api.put("/v1/secrets/OPENAI_API_KEY", json={"value": "sk-x"}).status_code == 200
    r = run(api, platform, "loopy")
    assert r["status"] == "failed"
    assert r["reason"] == "This server cannot hold a runc sandbox open, which a loop's tools need."


def test_cancel_a_queued_run(api: httpx.Client, hello: dict) -> None:
    created = api.post("/v1/runs", json={"agent": "hello"}).json()
    r = api.post(f"/v1/runs/{created['id']}/cancel").json()
    assert r["status"] == "cancelled"
    assert api.post(f"/v1/runs/{created['id']}/cancel").status_code == 409


def test_a_cancel_while_the_run_starts_ends_it_before_its_sandbox(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    hello: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled between its claim and its sandbox (its dependencies being prepared): the move
    to running sees the cancel, and no sandbox starts."""
    created = api.post("/v1/runs", json={"agent": "hello"}).json()
    real = run_worker._dependencies

    def then_cancel(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = real(*args, **kwargs)
        assert api.post(f"/v1/runs/{created['id']}/cancel").status_code == 200
        return found

    monkeypatch.setattr(run_worker, "_dependencies", then_cancel)
    started = len(fake_engine.containers)
    assert drain_runs(platform) == 1
    r = api.get(f"/v1/runs/{created['id']}").json()
    assert (r["status"], r["reason"]) == ("cancelled", "cancelled before the agent started")
    assert len(fake_engine.containers) == started


def test_a_cancel_while_the_dependencies_install_cancels_the_run(
    api: httpx.Client, platform: Platform, tmp_path: Path, fake_engine: FakeEngine
) -> None:
    """The install saw the cancel and stopped (`orch runs cancel`, or Ctrl-C on `orch run`): the
    run is cancelled, not failed, its log gives no advice about the dependency files, no sandbox
    starts, and nothing of the install is cached: the next run installs again, and works."""
    publish(api, "np", bundle(tmp_path, {"main.py": "", "requirements.txt": "numpy==1.26.3\n"}))
    created = api.post("/v1/runs", json={"agent": "np"}).json()

    def behave(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        if spec.name.endswith("-deps"):
            out(b"Resolved 1 package in 80ms\n")
            assert api.post(f"/v1/runs/{created['id']}/cancel").status_code == 200
            return ContainerExit(137, cancelled=True)  # as the engine ends one its should_stop stopped
        return ContainerExit(0)

    fake_engine.behaviour = behave
    started = len(fake_engine.containers)
    assert drain_runs(platform) == 1
    r = api.get(f"/v1/runs/{created['id']}").json()
    assert (r["status"], r["reason"]) == ("cancelled", "cancelled before the agent started")
    assert r["exit_code"] is None
    log = api.get(f"/v1/runs/{created['id']}/logs").json()["log"]
    assert "requirements.txt: cancelled, nothing installed" in log
    assert "failed" not in log and "Fix the dependency files" not in log, log
    assert [c.name.endswith("-deps") for c in fake_engine.containers[started:]] == [True]
    fake_engine.behaviour = lambda spec, out, err: ContainerExit(0)
    again = run(api, platform, "np")
    assert (again["status"], again["deps"]) == ("succeeded", "installed")


def test_recover_settles_the_runs_a_stopped_server_left(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    hello: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [api.post("/v1/runs", json={"agent": "hello"}).json()["id"] for _ in range(3)]
    left = [(RunStatus.STARTING, 1), (RunStatus.STARTING, 2), (RunStatus.RUNNING, 1)]
    with platform.store.session() as s:
        for run_id, (status, attempts) in zip(ids, left, strict=True):
            s.execute(
                update(RunRow).where(RunRow.id == run_id).values(status=status.value, attempts=attempts)
            )
    removed: list[str] = []
    monkeypatch.setattr(fake_engine, "remove_container", lambda name, timeout=10: removed.append(name))
    assert sorted(run_worker.recover(platform)) == sorted(ids)
    assert [(r["status"], r["reason"]) for r in (api.get(f"/v1/runs/{i}").json() for i in ids)] == [
        ("queued", None),
        ("failed", "the server stopped while the run was starting (2 times)"),
        ("failed", "the server stopped while the run was running"),
    ]
    # A server killed while it removed a finished sandbox left no container to find by label, but
    # its cgroups (found by the faults test): each settled run's sandboxes are removed by name.
    names = [run_worker.sandbox_name(platform, i) for i in ids]
    assert sorted(removed) == sorted([*names, *(f"{n}-deps" for n in names)])
    # The run queued again runs; its second attempt's log goes on after the server's note.
    assert drain_runs(platform) == 1
    log = api.get(f"/v1/runs/{ids[0]}/logs").json()["log"]
    said = "The server stopped while this run was starting; it was queued again.\n"
    assert log.startswith(said) and "→ environment" in log[len(said) :], log


def test_a_run_memory_budget_above_the_machines_memory_is_said_at_start(
    platform: Platform, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "memory", lambda: 8 * 2**30)
    with caplog.at_level(logging.WARNING, logger="orch.workers.runs"):
        platform.run_memory.total = 8 * 2**30  # all of it: an operator's choice, not said
        run_worker.recover(platform)
        assert caplog.messages == []
        platform.run_memory.total = 99999 * 2**40
        run_worker.recover(platform)
    assert caplog.messages == [
        "ORCH_RUN_MEMORY is 99999 TiB, more than this machine's 8 GiB of memory: sandboxes at their "
        "memory limits could take the memory the server and the machine need. Set it below that "
        "(the default is half the machine's memory)."
    ]


def test_bad_run_requests(api: httpx.Client, hello: dict) -> None:
    assert api.post("/v1/runs", json={"agent": "nope"}).status_code == 404
    resp = api.post("/v1/runs", json={"agent": "hello", "env": {"ORCH_SECRET": "x"}})
    assert resp.status_code == 400 and "reserved" in resp.json()["fix"]
    assert api.post("/v1/runs", json={"agent": "hello", "timeout": 0}).status_code == 400
    assert api.get("/v1/runs/run_nope").status_code == 404
    # NULs name nothing and no variable can carry one (PostgreSQL refused them in lookups: 500).
    resp = api.post("/v1/runs", json={"agent": "hello", "env": {"MODE": "a\x00"}})
    assert resp.status_code == 400 and "NUL" in resp.json()["message"]
    assert api.post("/v1/runs", json={"agent": "hel\x00lo"}).status_code == 422
    assert api.get("/v1/runs/run_%00").status_code == 400
    assert api.get("/v1/runs", params={"agent": "hel\x00lo"}).status_code == 400
    assert api.get("/v1/runs").json() == []


def test_default_counts_affected_agents(api: httpx.Client, tmp_path: Path, hello: dict) -> None:
    publish(api, "pinned", bundle(tmp_path, {"main.py": "", "orch.yaml": "environment: python-ml\n"}, "p"))
    resp = api.put("/v1/workspace/default-environment", json={"environment": "python-image"})
    assert resp.json()["affected_agents"] == 1


def test_long_entrypoint_paths_are_kept(api: httpx.Client, tmp_path: Path) -> None:
    # Longer than the VARCHAR(255) PostgreSQL enforced before migration 0005.
    entry = "a" * 120 + "/" + "b" * 120 + "/" + "c" * 40 + ".py"
    resp = publish(
        api, "deep", bundle(tmp_path, {entry: "print(1)\n", "orch.yaml": f"entrypoint: {entry}\n"})
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["version"]["entrypoint"] == entry


def test_input_with_nul_is_refused(api: httpx.Client, hello: dict) -> None:
    resp = api.post("/v1/runs", json={"agent": "hello", "input": "a\x00b"})
    assert resp.status_code == 400
    assert "NUL" in resp.json()["message"] and resp.json()["fix"]


def test_log_offsets_past_the_end_give_nothing(api: httpx.Client, platform: Platform, hello: dict) -> None:
    # Offsets past 2**63 made seek() raise, and the call answered 500 (found by schemathesis).
    r = run(api, platform, "hello")
    huge = 17050137461548460032
    resp = api.get(f"/v1/runs/{r['id']}/logs", params={"stdout": huge, "stderr": 10**30, "log": 5})
    assert resp.status_code == 200, resp.text
    logs = resp.json()
    assert logs["stdout"] == logs["stderr"] == "" and logs["offsets"]["stdout"] == huge
    assert logs["status"] == "succeeded"
