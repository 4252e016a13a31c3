"""A piece installed where PATH does not reach: orch runs Podman, runc, iptables... by name, so the
check (and the engine at a server's start) names the folder PATH lacks, not a missing package and
not an internal error; `orch admin check --json` prints JSON whatever stops it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orch.cli import admin
from orch.engine import network, podman, programs
from orch.engine.fake import FakeEngine
from orch.errors import EngineError, InvalidInput
from orch.services import host_check
from orch.services.platform import Platform
from tests.conftest import make_platform


@pytest.fixture
def platform(tmp_path: Path, fake_engine: FakeEngine) -> Platform:
    return make_platform(tmp_path / "home", fake_engine)


def _program(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every piece installed in tmp_path/installed (by its command's name, when orch runs it by
    name), a PATH that holds only an empty folder, and no dpkg to ask versions of."""
    folder = tmp_path / "installed"
    pieces = [
        dataclasses.replace(p, paths=(str(_program(folder, p.command or p.package)),))
        for p in host_check.PIECES
    ]
    monkeypatch.setattr(host_check, "PIECES", tuple(pieces))
    monkeypatch.setattr(host_check, "PASSED_PATH", tmp_path / "passed")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    return folder


def test_a_piece_installed_off_path_is_named_with_the_folder_path_lacks(
    installed: Path, platform: Platform
) -> None:
    report = host_check.run(platform)
    problem = report.problem
    assert problem is not None
    assert problem.message == (
        f"podman is installed at {installed / 'podman'}, but PATH does not include {installed}."
    )
    assert f"Add {installed} to the PATH" in problem.fix
    # A lasting fault of the host, as a missing piece is: a server refuses sandboxes at once.
    assert report.missing_piece and report.steps == []
    assert isinstance(platform.engine, FakeEngine) and platform.engine.containers == []


def test_the_pieces_pass_once_path_reaches_them(
    installed: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert host_check.missing_pieces()
    monkeypatch.setenv("PATH", f"{installed.parent / 'elsewhere'}:{installed}")
    assert host_check.missing_pieces() == []


def test_each_piece_run_by_name_is_looked_for_through_path(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every piece orch runs itself, not only Podman: a PATH without /usr/sbin lacks iptables."""
    for name in ("podman", "runc", "runsc", "mmdebstrap"):
        (installed.parent / "elsewhere" / name).symlink_to(installed / name)
    (gone,) = host_check.missing_pieces()
    assert gone.problem().message.startswith(f"iptables is installed at {installed / 'iptables'}")


def test_a_check_without_dpkg_on_path_does_not_fail(installed: Path) -> None:
    """runsc's version is asked of dpkg: with no dpkg to run, the piece is taken as it is."""
    runsc = next(p for p in host_check.PIECES if p.package == "runsc")
    assert runsc.at_least and runsc.present()


def test_a_server_start_names_podman_off_path_not_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podman, "INSTALLED", _program(tmp_path / "usr-bin", "podman"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError) as caught:
        podman.PodmanEngine().prepare()
    assert caught.value.message == (
        f"podman is installed at {tmp_path / 'usr-bin' / 'podman'}, but PATH does not include "
        f"{tmp_path / 'usr-bin'}."
    )
    # Not installed at all: said so.
    monkeypatch.setattr(podman, "INSTALLED", tmp_path / "nowhere" / "podman")
    with pytest.raises(EngineError) as caught:
        podman.PodmanEngine().prepare()
    assert caught.value.message == "Podman is not installed."


def test_admin_check_json_prints_json_when_the_check_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_settings(on_step: object) -> host_check.Report:
        raise InvalidInput("ORCH_ISOLATION must be runc or gvisor.", "Set it to one of them.")

    monkeypatch.setattr(admin, "_check", bad_settings)
    result = CliRunner().invoke(admin.app, ["check", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "ok": False,
        "steps": [],
        "problem": {
            "error": InvalidInput.code,
            "message": "ORCH_ISOLATION must be runc or gvisor.",
            "fix": "Set it to one of them.",
        },
        "warnings": [],
    }


def test_a_server_start_names_iptables_off_path_not_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a tester: a server started with a PATH without /usr/sbin said "iptables is not
    installed" when it set up the sandboxes' network."""
    _program(tmp_path / "usr-sbin", "iptables")
    monkeypatch.setattr(programs, "SYSTEM_PATH", str(tmp_path / "usr-sbin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError) as caught:
        network._iptables("-L")
    assert caught.value.message == (
        f"iptables is installed at {tmp_path / 'usr-sbin' / 'iptables'}, but PATH does not include "
        f"{tmp_path / 'usr-sbin'}."
    )
    # Not installed at all: said so.
    monkeypatch.setattr(programs, "SYSTEM_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(EngineError) as caught:
        network._iptables("-L")
    assert caught.value.message == "iptables is not installed, so sandboxes cannot be isolated."
