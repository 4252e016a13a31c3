"""`orch server` refuses what can't work before it makes anything: a secret key that is not one
leaves no home and no store; a home whose server runs is refused by its lock (home_lock.py); and
its help says the port settings give the defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orch.cli.main import app
from orch.errors import InvalidInput
from orch.secret import box
from orch.server import home_lock


def test_a_secret_key_that_is_not_one_is_refused_before_the_home_is_made(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"ORCH_HOME": str(home), "ORCH_SECRET_KEY": "short", "ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0"}
    res = CliRunner().invoke(app, ["server"], env=env)
    assert res.exit_code == 2, res.output
    assert "The secret_key setting (ORCH_SECRET_KEY or config.toml) is not a key" in res.output
    assert not home.exists()  # no orch.db, no config.toml, no lock file


def test_a_damaged_key_file_is_refused_before_the_store_is_made(tmp_path: Path) -> None:
    (tmp_path / box.KEY_FILE).write_text("not a key\n")
    env = {"ORCH_HOME": str(tmp_path), "ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0"}
    res = CliRunner().invoke(app, ["server"], env=env)
    assert res.exit_code == 2 and "is not a key" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [box.KEY_FILE]


def test_a_held_home_is_refused_naming_its_server(tmp_path: Path) -> None:
    held = home_lock.hold(tmp_path)
    try:
        with pytest.raises(InvalidInput) as starting:
            home_lock.hold(tmp_path)
        assert f"(pid {os.getpid()})" in starting.value.message  # its URL not known yet
        held.say("http://127.0.0.1:8770")
        with pytest.raises(InvalidInput) as refused:
            home_lock.hold(tmp_path)
        said = refused.value.message
        holder = f"pid {os.getpid()}, http://127.0.0.1:8770"
        assert f"Another orch server ({holder}) runs on ORCH_HOME {tmp_path}" in said
        assert "Stop that server first, or set ORCH_HOME" in refused.value.fix
    finally:
        held.release()
    home_lock.hold(tmp_path).release()  # released: the next server takes it


def test_server_help_says_the_settings_give_the_port_defaults() -> None:
    env = {"ORCH_PORT": "8770", "ORCH_SERVICES_PORT": "8771", "COLUMNS": "400"}
    shown = " ".join(CliRunner().invoke(app, ["server", "--help"], env=env).output.split())
    assert "the port setting (ORCH_PORT), else 8750" in shown
    assert "the services_port setting (ORCH_SERVICES_PORT), else 8751" in shown
