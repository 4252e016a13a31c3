"""Services' pieces without an engine: the image recipe, the container's arguments, logs, backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.engine.podman import detached_args
from orch.sandbox import seccomp
from orch.sandbox.service_spec import RUN_COMMAND_CAPS, ServiceLimits, container_spec, containerfile
from orch.services import deployed_logs
from orch.services.reconcile import BACKOFF_MAX, backoff

LIMITS = ServiceLimits(cpus=0.5, memory_bytes=256 * 1024**2, pids=64)


def spec(run_command: str | None = None):  # type: ignore[no-untyped-def]
    return container_spec(
        name="orch-x-svc_1-v1-abc",
        image="localhost/orch-svc/x:web-v1",
        command=["python", "main.py"],
        run_command=run_command,
        env={"A": "1"},
        limits=LIMITS,
        labels={"org.orch.instance": "x", "org.orch.kind": "service"},
    )


def test_containerfile_installs_dependencies_at_build_time() -> None:
    text = containerfile("localhost/orch/service-runner:abc", ["requirements.txt", "package.json"])
    assert text.startswith("FROM localhost/orch/service-runner:abc\nWORKDIR /home/user/app\n")
    assert "uv pip install" in text and "npm ci" in text and "npm install" in text
    # Dependencies from their files alone, the bundle after: a code change keeps their layers.
    assert text.index("COPY requirements.txt /home/user/app/") < text.index("uv pip install")
    assert text.index("COPY package.json /home/user/app/") < text.index("npm ci")
    assert text.index("npm ci") < text.index("COPY . /home/user/app")
    assert "ENV PORT=8080" in text
    bare = containerfile("B", [])
    assert "pip" not in bare and "npm" not in bare


def test_detached_container_is_hardened_and_publishes_no_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seccomp, "PODMAN_PROFILES", tmp_path / "profiles")
    args = detached_args(spec(), tmp_path / "c.log", deployed_logs.MAX_CONTAINER_LOG)
    # The sandboxes' seccomp rules, not Podman's default: no kernel keyrings, no user namespaces.
    (profile,) = (tmp_path / "profiles").iterdir()
    assert f"--security-opt=seccomp={profile}" in args
    assert args[:4] == ["run", "--name", "orch-x-svc_1-v1-abc", "-d"]
    assert f"--log-opt=path={tmp_path / 'c.log'}" in args and "--log-driver=k8s-file" in args
    assert f"--log-opt=max-size={deployed_logs.MAX_CONTAINER_LOG}" in args
    assert "--read-only" in args and "--user=1000:1000" in args and "--cap-drop=all" in args
    assert not [a for a in args if a.startswith("--cap-add")]
    assert "--memory=268435456b" in args and "--cpus=0.5" in args and "--pids-limit=64" in args
    assert "--network=orch-services" in args
    assert not [a for a in args if a in ("-p", "--publish", "-P") or a.startswith("--publish")]
    assert args[-2:] == ["python", "main.py"]


def test_run_command_gets_root_with_few_capabilities_then_drops(tmp_path: Path) -> None:
    args = detached_args(spec("apt-get install -y jq"), tmp_path / "c.log", 1024)
    assert "--user=0:0" in args and "--read-only" not in args
    assert [a for a in args if a.startswith("--cap-add")] == [f"--cap-add={c}" for c in RUN_COMMAND_CAPS]
    script = args[args.index("-c") + 1]
    assert script.startswith("set -e\napt-get install -y jq\nexec setpriv --reuid=1000 --regid=1000")


def test_k8s_file_logs_parse_full_and_partial_lines() -> None:
    raw = (
        "2026-01-01T00:00:00.1+00:00 stdout F hello\n"
        "2026-01-01T00:00:00.2+00:00 stderr P par\n"
        "2026-01-01T00:00:00.3+00:00 stderr F tial\n"
        "2026-01-01T00:00:00.4+00:00 stdout F \n"
    )
    assert deployed_logs.parse(raw) == "hello\npartial\n\n"
    assert deployed_logs.tail("a\nb\nc\n", 2) == "b\nc\n"


def test_backoff_doubles_up_to_its_maximum() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(100) == BACKOFF_MAX == 60
