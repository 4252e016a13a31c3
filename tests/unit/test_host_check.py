"""The machine's self-check against the fake engine: pieces, the sandbox it starts, diagnoses."""

from __future__ import annotations

import dataclasses
import json
import pwd
from pathlib import Path

import pytest

from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.errors import HostCheckFailed
from orch.sandbox.spec import Limits
from orch.server import main
from orch.services import host_check
from orch.services.host_check import Piece
from orch.services.platform import Platform
from orch.workers.runs import outcome
from tests.conftest import make_platform

# What Podman 4.3 printed on a fresh machine without catatonit (exit 125).
NO_INIT = (
    "Error: container-init binary not found on the host: "
    "stat /usr/libexec/podman/catatonit: no such file or directory"
)
NO_CNI = 'Error: plugin type="bridge" failed (add): failed to find plugin "bridge" in path [/usr/lib/cni]'


@pytest.fixture(autouse=True)
def no_account_at_the_sandboxes_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check's warning of a host account at uid 1000 (this machine's own passwd) stays out of
    what the tests count; the tests of the warning say which account there is."""
    _account(monkeypatch, None)


@pytest.fixture
def platform(tmp_path: Path, fake_engine: FakeEngine) -> Platform:
    """The check needs no database: one store is enough."""
    return make_platform(tmp_path / "home", fake_engine)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every piece present (a file of its own under tmp_path), and a private 'passed' mark."""
    pieces = []
    for p in host_check.PIECES:
        f = tmp_path / "bin" / p.package
        f.parent.mkdir(exist_ok=True)
        f.touch()
        pieces.append(Piece(p.what, p.package, (str(f),), p.symptom))
    monkeypatch.setattr(host_check, "PIECES", tuple(pieces))
    monkeypatch.setattr(host_check, "PASSED_PATH", tmp_path / "passed")
    return tmp_path / "bin"


@pytest.fixture
def gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every piece missing: what Podman's error names is then blamed (the host decides)."""
    pieces = [
        dataclasses.replace(p, paths=(str(tmp_path / "absent" / p.package),)) for p in host_check.PIECES
    ]
    monkeypatch.setattr(host_check, "PIECES", tuple(pieces))


def _proves(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
    out(host_check.SANDBOX_PROOF.encode() + b"\n")
    return ContainerExit(0)


def _platform(platform: Platform) -> FakeEngine:
    engine = platform.engine
    assert isinstance(engine, FakeEngine)
    engine.behaviour = _proves
    return engine


def test_a_machine_with_every_piece_passes_with_a_real_sandbox_and_build(
    here: Path, platform: Platform
) -> None:
    engine = _platform(platform)
    report = host_check.run(platform)
    assert report.ok, report.problem
    assert [name for name, _ in report.steps][-2:] == [
        "a sandbox (init, limits, a root of its own, sandbox network)",
        "a build step",
    ]
    # The sandbox is a run's: the run path's spec, with its limits, on the sandbox network.
    (spec,) = engine.containers
    assert spec.memory_bytes and spec.pids and spec.user == "1000:1000"
    assert spec.network.value == "sandbox" and spec.labels["org.orch.kind"] == "check"
    # The build step is built afresh and its image removed afterwards.
    (build,) = engine.builds
    assert build.no_cache and "RUN " in build.containerfile
    assert engine.inspect_image(build.tag) is None


def test_a_missing_piece_is_named_with_its_package_and_nothing_starts(here: Path, platform: Platform) -> None:
    engine = _platform(platform)
    (here / "catatonit").unlink()
    report = host_check.run(platform)
    assert not report.ok and report.problem is not None
    assert "catatonit" in report.problem.message
    assert "apt-get install catatonit" in report.problem.fix
    assert report.to_dict()["problem"]["package"] == "catatonit"  # type: ignore[index]
    assert engine.containers == [] and engine.builds == []


def test_a_sandbox_that_fails_is_traced_to_the_piece_podman_names(here: Path, platform: Platform) -> None:
    engine = _platform(platform)

    def fails(spec, out, err):  # type: ignore[no-untyped-def]
        # Gone since the pieces were looked at: Podman's error is traced to it only as it is gone.
        (here / "containernetworking-plugins").unlink()
        err(NO_CNI.encode())
        return ContainerExit(125)

    engine.behaviour = fails
    report = host_check.run(platform)
    assert report.problem is not None and "containernetworking-plugins" in report.problem.fix
    assert engine.builds == []  # the build step is not tried after a failed sandbox


def test_an_unknown_failure_quotes_podman_and_points_at_setup(here: Path, platform: Platform) -> None:
    engine = _platform(platform)

    def fails(spec, out, err):  # type: ignore[no-untyped-def]
        err(b"Error: something new went wrong\n")
        return ContainerExit(125)

    engine.behaviour = fails
    report = host_check.run(platform)
    assert report.problem is not None
    assert "exit 125" in report.problem.message and "something new went wrong" in report.problem.message
    assert "scripts/setup" in report.problem.fix


def test_a_failing_build_step_fails_the_check(here: Path, platform: Platform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _platform(platform)
    monkeypatch.setattr(host_check, "_BUILD_COMMAND", "exit 1")
    report = host_check.run(platform)
    assert report.problem is not None and "build step" in report.problem.message


def test_a_server_start_skips_the_sandbox_when_nothing_changed_since_a_pass(
    here: Path, platform: Platform
) -> None:
    engine = _platform(platform)
    assert host_check.run(platform, fresh=False).ok
    assert len(engine.containers) == 1
    assert host_check.run(platform, fresh=False).ok
    assert len(engine.containers) == 1  # remembered
    # A changed piece (reinstalled, upgraded) checks again; so does an explicit check.
    (here / "runc").write_text("new")
    assert host_check.run(platform, fresh=False).ok
    assert len(engine.containers) == 2
    assert host_check.run(platform).ok
    assert len(engine.containers) == 3
    # A missing piece is always found, remembered pass or not.
    (here / "catatonit").unlink()
    assert not host_check.run(platform, fresh=False).ok


def test_a_missing_base_image_says_how_to_build_it(here: Path, platform: Platform) -> None:
    engine = _platform(platform)
    engine.images_by_tag.clear()
    report = host_check.run(platform)
    assert report.problem is not None and "orch admin build-images" in report.problem.fix


@pytest.mark.parametrize(
    ("stderr", "package"),
    [
        (NO_INIT, "catatonit"),
        (NO_CNI, "containernetworking-plugins"),
        ('Error: default OCI runtime "runc" not found: invalid argument', "runc"),
        ("Error: could not find a working conmon binary (configured options: [...]): not found", "conmon"),
    ],
)
def test_diagnose_names_the_package(stderr: str, package: str, gone: None) -> None:
    found = host_check.diagnose(stderr)
    assert found is not None and found.details["package"] == package


def test_diagnose_leaves_other_output_alone() -> None:
    assert host_check.diagnose("Traceback (most recent call last):\nValueError: nope") is None


def test_a_run_whose_sandbox_cannot_start_says_what_is_missing(gone: None) -> None:
    limits = Limits(cpus=1, memory_bytes=2**28, pids=100, timeout=10)
    status, reason = outcome(ContainerExit(125), limits, NO_INIT.encode())
    assert status.value == "failed"
    assert reason is not None and "apt-get install catatonit" in reason
    # An agent's own exit 125 stays its own.
    assert outcome(ContainerExit(125), limits, b"my agent chose 125")[1] == "exit code 125"


def test_runc_naming_another_missing_file_is_not_a_missing_runc() -> None:
    """runc's own failure about a file it lacks (seen in a busy benchmark) is no missing runc."""
    text = (
        "runc create failed: unable to start container process: open /proc/self/fd: no such file or directory"
    )
    assert host_check.diagnose(text) is None


def test_a_runsc_older_than_the_backport_is_named_with_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bookworm's own runsc (2022) is present but does not serve: the check says which version
    it found, which it needs, and how to get that one (real dpkg comparisons)."""
    runsc = next(p for p in host_check.PIECES if p.package == "runsc")
    (tmp_path / "runsc").touch()
    piece = dataclasses.replace(runsc, paths=(str(tmp_path / "runsc"),))
    installed = {"version": "0.0~20221219.0-2+b3"}
    monkeypatch.setattr(host_check, "_dpkg_version", lambda package: installed["version"])
    assert not piece.present()
    problem = piece.problem()
    assert problem.message == (
        "The installed runsc (0.0~20221219.0-2+b3) is older than 0.0~20240729, the oldest that orch can use."
    )
    assert "apt-get install -t bookworm-backports runsc" in problem.fix
    installed["version"] = "0.0~20240729.0-4~bpo12+2"
    assert piece.present()
    installed["version"] = ""  # not dpkg's: present is enough
    assert piece.present()


# What catatonit itself says when the command it starts cannot be (a busy machine's EAGAIN):
# catatonit is there, running as the sandbox's PID 1.
CATATONIT_RAN = "ERROR (catatonit:1): failed to exec pid1: Resource temporarily unavailable"


def test_a_failed_sandbox_naming_catatonit_is_not_a_missing_catatonit(here: Path, platform: Platform) -> None:
    """A sandbox that failed with catatonit's own error (so catatonit is there) is said as it
    failed, with the real error, not as a machine that lacks catatonit."""
    engine = _platform(platform)

    def fails(spec, out, err):  # type: ignore[no-untyped-def]
        err(f"{CATATONIT_RAN}\n".encode())
        return ContainerExit(1)

    engine.behaviour = fails
    report = host_check.run(platform)
    assert report.problem is not None
    assert report.problem.message == f"A sandbox could not start here (exit 1): {CATATONIT_RAN}"
    assert "package" not in report.problem.details and not report.missing_piece
    # What the step saw, for the server's log: its exit and its stderr.
    assert "exit 1" in report.output and CATATONIT_RAN in report.output


def test_the_checks_of_two_processes_of_one_home_name_their_sandboxes_and_builds_apart(
    here: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's check and an `orch admin check` on the same ORCH_HOME at the same moment used
    one sandbox name, and the launcher tore down the other's sandbox as a gone owner's: the
    server then said the machine could not run sandboxes (found by a tester)."""
    engine = _platform(platform)
    names: list[str] = []
    engine.behaviour = lambda spec, out, err: names.append(spec.name) or _proves(spec, out, err)
    for pid in (4242, 4343):
        monkeypatch.setattr(host_check.os, "getpid", lambda pid=pid: pid)
        assert host_check.run(platform).ok
    assert len(set(names)) == 2 and all(n.startswith(platform.container_prefix) for n in names)
    tags = [b.tag for b in engine.builds]
    assert len(set(tags)) == 2


def test_diagnose_blames_a_piece_only_where_the_host_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Podman's error is traced to catatonit only when the path it names (Podman's init_path)
    is absent; with catatonit in place, the error is no missing piece."""
    catatonit = next(p for p in host_check.PIECES if p.package == "catatonit")
    libexec, usr_bin = tmp_path / "libexec" / "catatonit", tmp_path / "bin" / "catatonit"
    piece = dataclasses.replace(catatonit, paths=(str(libexec), str(usr_bin)))
    monkeypatch.setattr(host_check, "PIECES", (piece,))
    said = f"Error: container-init binary not found on the host: stat {libexec}: no such file or directory"
    usr_bin.parent.mkdir()
    usr_bin.touch()
    found = host_check.diagnose(said)  # /usr/bin's is there, the one Podman looks at is not
    assert found is not None and found.details["package"] == "catatonit"
    libexec.parent.mkdir()
    libexec.touch()
    assert host_check.diagnose(said) is None
    assert host_check.diagnose(CATATONIT_RAN) is None
    usr_bin.unlink()
    libexec.unlink()
    assert host_check.diagnose(CATATONIT_RAN) is None  # catatonit's own words: it ran


def _fails_then_passes(engine: FakeEngine, failures: int, calls: list[int]) -> None:
    """The check's sandbox fails `failures` times (a busy machine's error), then starts."""

    def behaviour(spec, out, err):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) <= failures:
            err(f"{CATATONIT_RAN}\n".encode())
            return ContainerExit(1)
        return _proves(spec, out, err)

    engine.behaviour = behaviour


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_check, "RECHECK", 0.0, raising=False)


def test_a_server_start_whose_check_fails_once_refuses_nothing(
    here: Path, platform: Platform, no_pause: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure that is no missing piece (a busy machine, a killed server's leftovers) is said
    in the log with the real error, and checked again before any sandbox is refused."""
    calls: list[int] = []
    _fails_then_passes(_platform(platform), 1, calls)
    refused: list[object] = []
    _watching(platform, refused)
    main._check_host(platform)
    log = capsys.readouterr().err
    assert len(calls) == 2 and refused == [None, None] and platform.host_problem is None
    assert "no sandbox can start" not in log and "lacks catatonit" not in log
    assert "self-check failed; it runs again in 0 s" in log and CATATONIT_RAN in log and "exit 1" in log
    assert log.rstrip().endswith("orch server: the machine's self-check passes now.")


def test_a_failure_that_lasts_refuses_sandboxes_until_a_check_passes(
    here: Path, platform: Platform, no_pause: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failed twice: sandboxes are refused (said once, with the real error); the check runs on,
    and a pass clears the refusal without a restart."""
    calls: list[int] = []
    _fails_then_passes(_platform(platform), 4, calls)
    refused: list[object] = []
    _watching(platform, refused)
    main._check_host(platform)
    log = capsys.readouterr().err
    assert len(calls) == 5 and platform.host_problem is None
    # Refused from the second failure on, until the fifth check passes.
    assert refused[:2] == [None, None] and all(isinstance(p, HostCheckFailed) for p in refused[2:])
    assert log.count("no sandbox can start on this machine. A sandbox could not start here (exit 1)") == 1
    assert log.count(CATATONIT_RAN) >= 2 and "lacks catatonit" not in log
    assert log.rstrip().endswith("the machine's self-check passes now; sandboxes start again.")


def test_a_missing_piece_refuses_sandboxes_at_once_until_it_is_installed(
    here: Path, platform: Platform, no_pause: None
) -> None:
    """A piece found missing is no moment's failure: refused at the first check (the sentence of
    `orch admin check`), and cleared by a later check once the package is installed."""
    _platform(platform)
    (here / "catatonit").unlink()
    problems: list[object] = []

    def say(line: str) -> None:
        problems.append(platform.host_problem)
        if "no sandbox can start" in line:
            (here / "catatonit").touch()  # installed meanwhile: the next check passes

    host_check.watch(platform, say)
    (first, cleared) = problems
    assert isinstance(first, HostCheckFailed) and first.details["package"] == "catatonit"
    assert "apt-get install catatonit" in first.fix
    assert cleared is None and platform.host_problem is None


def test_the_checks_stop_with_the_server(here: Path, platform: Platform, no_pause: None) -> None:
    """A failing check runs again only while the server serves."""
    _platform(platform)
    (here / "catatonit").unlink()
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        platform.stopping.set()

    host_check.watch(platform, say)
    assert len(said) == 1 and platform.host_problem is not None


def _watching(platform: Platform, seen: list[object]) -> None:
    """Record `platform.host_problem` at each start of the check's sandbox."""
    engine = platform.engine
    assert isinstance(engine, FakeEngine)
    behaviour = engine.behaviour

    def looking(spec, out, err):  # type: ignore[no-untyped-def]
        seen.append(platform.host_problem)
        return behaviour(spec, out, err)

    engine.behaviour = looking


def _account(monkeypatch: pytest.MonkeyPatch, name: str | None) -> list[int]:
    """The host's passwd as the check sees it: `name` at every uid asked for (None: no account)."""
    asked: list[int] = []

    def getpwuid(uid: int) -> pwd.struct_passwd:
        asked.append(uid)
        if name is None:
            raise KeyError(f"getpwuid(): uid not found: {uid}")
        return pwd.struct_passwd((name, "x", uid, uid, "", f"/home/{name}", "/bin/bash"))

    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    return asked


def test_a_login_account_at_the_sandboxes_uid_is_warned_of_and_fails_nothing(
    here: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: uid 1000, which every sandbox runs as without a user namespace, was the
    login account `cloudsdk`, whose processes read a running run's environment (its secrets) from
    /proc; the check passed without a word. It warns, naming the account and the fix."""
    _platform(platform)
    asked = _account(monkeypatch, "cloudsdk")
    report = host_check.run(platform)
    assert report.ok and asked == [1000]
    (warning,) = report.warnings
    assert "uid 1000, which is the account cloudsdk" in warning
    assert "read each running sandbox's environment (a run's secrets included)" in warning
    assert "Remove that account or give it another uid" in warning
    assert report.to_dict()["warnings"] == [warning] and report.to_dict()["ok"] is True


def test_no_account_at_the_sandboxes_uid_warns_of_nothing(
    here: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _platform(platform)
    _account(monkeypatch, None)
    report = host_check.run(platform)
    assert report.ok and report.warnings == []
    assert report.to_dict()["warnings"] == []


def test_orch_admin_check_prints_the_warning_and_exits_0(
    here: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from orch.cli import admin

    _platform(platform)
    _account(monkeypatch, "cloudsdk")
    monkeypatch.setattr(admin, "_check", lambda on_step: host_check.run(platform, on_step))
    result = CliRunner().invoke(admin.app, ["check"])
    assert result.exit_code == 0, result.output
    assert "! Every sandbox runs as the host's uid 1000, which is the account cloudsdk" in result.output
    assert result.output.rstrip().endswith("This machine can run orch's sandboxes and builds.")
    as_json = CliRunner().invoke(admin.app, ["check", "--json"])
    assert as_json.exit_code == 0 and "account cloudsdk" in json.loads(as_json.stdout)["warnings"][0]


def test_a_server_says_the_warning_once_however_often_it_checks(
    here: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch, no_pause: None
) -> None:
    calls: list[int] = []
    _fails_then_passes(_platform(platform), 2, calls)
    _account(monkeypatch, "cloudsdk")
    said: list[str] = []
    host_check.watch(platform, said.append)
    assert len(calls) == 3
    warned = [line for line in said if "account cloudsdk" in line]
    assert warned == [said[0]] and said[0].startswith("orch server: warning: Every sandbox runs as")
