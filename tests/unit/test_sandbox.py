"""The sandbox's shape: hardened podman arguments, limits, dependency keys, outcome reasons."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from orch.engine.base import ContainerExit, Mount
from orch.engine.podman_run import run_args
from orch.models import RunStatus
from orch.sandbox import deps
from orch.sandbox.spec import Limits, run_spec
from orch.workers.runs import outcome

LIMITS = Limits(cpus=0.5, memory_bytes=128 * 1024 * 1024, pids=64, timeout=30)


def spec(network: bool = False):  # type: ignore[no-untyped-def]
    return run_spec(
        name="orch-x-run_1",
        image="localhost/orch/python:abc",
        command=["python", "main.py"],
        bundle_dir=Path("/data/bundle"),
        deps=deps.Deps("none"),
        env={"A": "1"},
        stdin=b"{}",
        limits=LIMITS,
        network=network,
        labels={"org.orch.instance": "i1"},
        host_mounts=[Mount("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt")],
    )


def test_a_run_gets_a_root_of_its_own() -> None:
    # Writable, as a template's users expect; the launcher bounds it (tests/integration/
    # test_runc_launcher.py: a disk bomb in / ends in ENOSPC, and counts in the memory limit).
    assert not spec().read_only


def test_podman_arguments_are_hardened() -> None:
    # Podman cannot bound a writable root on this host (no quota on ext4): a spec it runs keeps
    # the root read-only unless it asks otherwise (a service's run_command).
    args = run_args("podman", dataclasses.replace(spec(), read_only=True))
    for flag in (
        "--cap-drop=all",
        "--security-opt=no-new-privileges",
        "--read-only",
        "--read-only-tmpfs=false",
        "--network=none",
        "--pids-limit=64",
        "--cpus=0.5",
        f"--memory={128 * 1024 * 1024}b",
        f"--memory-swap={128 * 1024 * 1024}b",
        "--user=1000:1000",
        "--init",
    ):
        assert flag in args, flag
    assert "/data/bundle:/opt/orch/bundle:ro" in args
    assert "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro" in args
    assert not any(a.endswith(":rw") for a in args)  # nothing of the host is writable
    assert "--publish" not in " ".join(args) and "-p" not in args
    tmpfs = [args[i + 1] for i, a in enumerate(args) if a == "--tmpfs"]
    assert all("size=" in t and "nosuid" in t for t in tmpfs) and len(tmpfs) == 2
    assert args[args.index("localhost/orch/python:abc") + 1 :][-2:] == ["python", "main.py"]
    assert "--network=orch-sandbox" in run_args("podman", spec(network=True))


def test_dependency_key() -> None:
    a = deps.cache_key({"requirements.txt": b"six\n"}, "img1")
    assert a == deps.cache_key({"requirements.txt": b"six\n"}, "img1")
    assert a != deps.cache_key({"requirements.txt": b"six==1\n"}, "img1")
    assert a != deps.cache_key({"requirements.txt": b"six\n"}, "img2")
    assert deps.cache_key({"package.json": b"{}"}, "i") != deps.cache_key(
        {"package.json": b"{}", "package-lock.json": b"{}"}, "i"
    )
    assert deps.dependency_files({"main.py": b"", "requirements.txt": b"x", "package.json": b"{}"}) == {
        "requirements.txt": b"x",
        "package.json": b"{}",
    }


def test_outcome_reasons() -> None:
    assert outcome(ContainerExit(0), LIMITS, b"") == (RunStatus.SUCCEEDED, None)
    assert outcome(ContainerExit(3), LIMITS, b"") == (RunStatus.FAILED, "exit code 3")
    assert outcome(ContainerExit(159), LIMITS, b"") == (
        RunStatus.FAILED,
        "killed (SIGSYS): a system call the sandbox does not allow",
    )
    assert outcome(ContainerExit(137, oom_killed=True), LIMITS, b"") == (
        RunStatus.FAILED,
        "killed: memory limit 128 MiB",
    )
    assert outcome(ContainerExit(137, timed_out=True), LIMITS, b"") == (
        RunStatus.TIMED_OUT,
        "timed out after 30 s",
    )
    assert outcome(ContainerExit(137, cancelled=True), LIMITS, b"")[0] == RunStatus.CANCELLED
    status, reason = outcome(
        ContainerExit(1), LIMITS, b"OSError: [Errno 11] Resource temporarily unavailable"
    )
    assert status == RunStatus.FAILED and reason == "exit code 1: process limit (64) reached"
