"""The sandbox's shape: hardened podman arguments, limits, dependency keys, outcome reasons."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from orch.engine import podman_run
from orch.engine.base import ContainerExit, ContainerSpec, Mount
from orch.engine.fake import FakeEngine
from orch.engine.podman_run import run_args
from orch.errors import InstallFailed
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
    key = functools.partial(deps.cache_key, workspace_id="ws_a", bundle_sha="b1")
    a = key({"requirements.txt": b"six\n"}, "img1")
    assert a == key({"requirements.txt": b"six\n"}, "img1")
    assert a != key({"requirements.txt": b"six==1\n"}, "img1")
    assert a != key({"requirements.txt": b"six\n"}, "img2")
    assert key({"package.json": b"{}"}, "i") != key({"package.json": b"{}", "package-lock.json": b"{}"}, "i")
    assert deps.dependency_files({"main.py": b"", "requirements.txt": b"x", "package.json": b"{}"}) == {
        "requirements.txt": b"x",
        "package.json": b"{}",
    }


def install_in(
    tmp_path: Path, engine: FakeEngine, requirements: bytes, log: Callable[[str], None]
) -> Callable[[], deps.Deps]:
    """An install of `requirements` (requirements.txt) on `engine`, cached under tmp_path/cache."""
    (tmp_path / "bundle").mkdir(exist_ok=True)
    return functools.partial(
        deps.ensure,
        engine,
        cache_root=tmp_path / "cache",
        image="img",
        image_id="img1",
        bundle_dir=tmp_path / "bundle",
        dep_files={"requirements.txt": requirements},
        base_spec=spec(),
        log=log,
        timeout=30,
        workspace_id="ws_a",
        bundle_sha="b1",
    )


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
    installed = install_in(tmp_path, engine, b"humanize\n", logged.append)()
    installed.release()
    assert installed.status == "installed"
    assert logged == [
        "Installing requirements.txt",
        "  Resolved 1 package in 5ms",
        "  Installed 1 package in 21ms",
        "   + humanize==4.9.0 \u00e9",
        "  last line, no end",
        "  warnwarnwarnwarn",
        "requirements.txt: installed and cached",
    ]


@pytest.mark.parametrize("code", [137, 0])
def test_an_install_a_cancel_stopped_is_not_cached(tmp_path: Path, monkeypatch, code: int) -> None:  # type: ignore[no-untyped-def]
    """A cancel stops the install: it says so (no failure, no advice about the dependency
    files), and nothing of it is kept, even when the kill came as it exited 0; the next install
    of the same files installs again."""
    monkeypatch.setattr(os, "chown", lambda *a: None)
    engine = FakeEngine()
    engine.behaviour = lambda spec, out, err: ContainerExit(code, cancelled=True)
    logged: list[str] = []
    ensure = install_in(tmp_path, engine, b"numpy==1.26.3\n", logged.append)
    with pytest.raises(deps.Cancelled):
        ensure()
    assert logged == ["Installing requirements.txt", "requirements.txt: cancelled, nothing installed"]
    key = deps.cache_key(
        {"requirements.txt": b"numpy==1.26.3\n"}, "img1", workspace_id="ws_a", bundle_sha="b1"
    )
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.lock"]  # no install, no part
    engine.behaviour = lambda spec, out, err: ContainerExit(0)
    again = ensure()
    again.release()
    assert again.status == "installed"


@pytest.mark.parametrize("stopped", [{"cancelled": True}, {"timed_out": True}])
def test_an_agent_that_exited_0_as_it_was_stopped_succeeded(stopped: dict[str, bool]) -> None:
    """A cancel that came as the agent exited 0 by itself was recorded `cancelled` with exit code 0
    and the agent's whole output (found by a tester): its work was done."""
    assert outcome(ContainerExit(0, **stopped), LIMITS, b"") == (RunStatus.SUCCEEDED, None)
    assert outcome(ContainerExit(137, **stopped), LIMITS, b"")[0] != RunStatus.SUCCEEDED


def test_an_install_that_times_out_says_whose_limit_it_ran_into(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "chown", lambda *a: None)
    engine = FakeEngine()
    engine.behaviour = lambda spec, out, err: ContainerExit(137, timed_out=True)
    with pytest.raises(InstallFailed) as failed:
        install_in(tmp_path, engine, b"numpy==1.26.3\n", lambda line: None)()
    assert failed.value.message == (
        "Installing requirements.txt took longer than the server's build timeout (30 s), and was stopped."
    )
    assert "ORCH_BUILD_TIMEOUT" in failed.value.fix and "dependency files" not in failed.value.fix


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


def test_reasons_come_from_the_launchers_facts_not_from_the_agents_words() -> None:
    """The process limit is named when the sandbox's cgroup says it was reached, whatever the
    agent wrote (a thread it could not start says nothing of EAGAIN), and only then."""
    threads = b"RuntimeError: can't start new thread\n"
    assert outcome(ContainerExit(1, pids_limit_reached=True), LIMITS, threads) == (
        RunStatus.FAILED,
        "exit code 1: process limit (64) reached",
    )
    for words in (b"HTTP fetch failed: EAGAIN\n", b"OSError: [Errno 11] Resource temporarily unavailable"):
        assert outcome(ContainerExit(2), LIMITS, words) == (RunStatus.FAILED, "exit code 2")
    # 137 is a SIGKILL's code and an exit(137)'s alike (the sandbox's init reports both so): the
    # reason says so rather than assert a kill.
    status, reason = outcome(ContainerExit(137), LIMITS, b"")
    assert status == RunStatus.FAILED and reason is not None
    assert reason == "exit code 137: killed by SIGKILL, or it exited with 137"
    assert "killed (SIGKILL)" not in reason
    # An agent that handled the refused fork and ended well succeeded.
    assert outcome(ContainerExit(0, pids_limit_reached=True), LIMITS, b"") == (RunStatus.SUCCEEDED, None)


def test_the_process_limit_is_read_from_the_parent_cgroup(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """v1 keeps the refused forks' count in the sandbox's own cgroup (gone with it): the parent's
    peak says it. v2 counts them up the tree, in the parent's pids.events too."""
    monkeypatch.setattr(podman_run, "CGROUP_ROOT", tmp_path)

    def parent(folder: Path, peak: int, events: int = 0) -> None:
        folder.mkdir(parents=True)
        (folder / "pids.peak").write_text(f"{peak}\n")
        (folder / "pids.events").write_text(f"max {events}\n")

    parent(tmp_path / "pids" / "orch_v1-full", peak=64)
    parent(tmp_path / "pids" / "orch_v1-room", peak=63)
    parent(tmp_path / "orch_v2-refused", peak=12, events=3)
    parent(tmp_path / "orch_v2-room", peak=12)
    reached = podman_run._pids_reached_limit
    assert reached("v1-full", 64) and not reached("v1-room", 64)
    assert reached("v2-refused", 64) and not reached("v2-room", 64)
    assert not reached("gone", 64) and not reached("v1-full", None)


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
