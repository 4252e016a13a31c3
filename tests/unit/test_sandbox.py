"""The sandbox's shape: hardened podman arguments, limits, dependency keys, outcome reasons."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from orch.engine.base import ContainerExit, ContainerSpec, Mount
from orch.engine.fake import FakeEngine
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
    # HOME is the sandbox user's home, where a template put its ~/.local and dotfiles; the run
    # works in a directory of its own below it.
    assert (spec().env["HOME"], spec().workdir) == ("/home/user", "/home/user/work")


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


def test_an_install_written_in_pieces_is_logged_in_whole_lines(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """uv writes a line in pieces ("Installed ", "1 package", " in 21ms"), and the launcher hands
    each piece on as it comes: the run's log still gets whole lines, each stream's own, the last
    one without an end included, the blank one left out."""
    monkeypatch.setattr(os, "chown", lambda *a: None)  # the install's directories, for user 1000
    engine = FakeEngine()

    def install(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        for piece in (b"Resolved 1 pack", b"age in 5ms\nInstalled ", b"1 package", b" in 21ms\r\n"):
            out(piece)
            err(b"warn")  # interleaved with the other stream, which keeps its own line
        out("\n + humanize==4.9.0 \u00e9".encode()[:-1])  # a character cut in two ...
        out("\u00e9".encode()[-1:] + b"\nlast line, no end")  # ... and joined again
        return ContainerExit(0)

    engine.behaviour = install
    logged: list[str] = []
    (tmp_path / "bundle").mkdir()
    result = deps.ensure(
        engine,
        cache_root=tmp_path / "cache",
        image="img",
        image_id="img1",
        bundle_dir=tmp_path / "bundle",
        dep_files={"requirements.txt": b"humanize\n"},
        base_spec=spec(),
        log=logged.append,
        timeout=30,
    )
    assert result.status == "installed"
    assert logged == [
        "Installing requirements.txt",
        "  Resolved 1 package in 5ms",
        "  Installed 1 package in 21ms",
        "   + humanize==4.9.0 \u00e9",
        "  last line, no end",
        "  warnwarnwarnwarn",
        "requirements.txt: installed and cached",
    ]


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


def test_a_long_install_line_is_cut_between_characters() -> None:
    """A line with no end is logged in pieces of LONGEST characters: none is cut in two, however
    the bytes came (here one at a time, each character but the first two bytes)."""
    logged: list[str] = []
    lines = deps._Lines(logged.append)
    data = ("x" + "\u00e9" * (deps._Lines.LONGEST + 10)).encode()
    for i in range(len(data)):
        lines(data[i : i + 1])
    lines.close()
    assert [len(line) for line in logged] == [2 + deps._Lines.LONGEST, 2 + 11]
    assert "".join(line[2:] for line in logged) == data.decode()
