"""`orch server` refuses what can't work before it makes anything: a secret key that is not one
leaves no home and no store; a home whose server runs is refused by its lock (home_lock.py); and
its help says the port settings give the defaults."""

from __future__ import annotations

import os
import socket
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


def _unreachable_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once it is closed


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        # Said with the driver SQLAlchemy tried to load ("No module named 'MySQLdb'"), once the
        # home and its server.lock were made.
        ({"ORCH_DATABASE_URL": "mysql://x"}, "The database URL is a mysql:// one, and orch keeps its store"),
        # Said once the home was made, with psycopg's two lines, exit 1.
        (
            {"ORCH_DATABASE_URL": f"postgresql://u:pw@127.0.0.1:{_unreachable_port()}/orch"},
            "Cannot open the database at postgresql://u:***@127.0.0.1:",  # as written
        ),
        # Started, and its runs waited for a node, which `orch node start` refuses on SQLite.
        ({"ORCH_CLUSTER": "127.0.0.1:6379"}, "ORCH_CLUSTER is set (127.0.0.1:6379), and the store"),
    ],
)
def test_a_store_the_server_cannot_use_is_refused_before_the_home_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], said: str
) -> None:
    def platform(*_: object, **__: object) -> None:
        raise AssertionError("the server went on to make its platform")

    monkeypatch.setattr("orch.server.main.machine.platform", platform)
    home = tmp_path / "home"
    env = {"ORCH_HOME": str(home), "ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0", **settings}
    res = CliRunner().invoke(app, ["server"], env=env)
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.output.startswith(f"✗ {said}"), res.output
    assert "module" not in res.output and "\n\t" not in res.output
    assert not home.exists()  # no server.lock, no orch.db, no config.toml


def test_a_second_server_of_a_held_home_on_its_port_names_the_server_not_the_port(tmp_path: Path) -> None:
    """Found by a tester: `orch server` run twice with the same home and port said "Cannot listen
    on 127.0.0.1:PORT: Address already in use ... pass --port", which led to the home's refusal."""
    held = home_lock.hold(tmp_path)
    taken = socket.socket()
    try:
        held.say("http://127.0.0.1:8770")
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = {"ORCH_HOME": str(tmp_path), "ORCH_PORT": port, "ORCH_SERVICES_PORT": "0"}
        res = CliRunner().invoke(app, ["server"], env=env)
        assert res.exit_code == 2, res.output
        assert f"Another orch server (pid {os.getpid()}, http://127.0.0.1:8770) runs" in res.output
    finally:
        taken.close()
        held.release()
    # With no server holding the home, the port is what is said.
    other = socket.socket()
    try:
        other.bind(("127.0.0.1", 0))
        other.listen()
        env = {"ORCH_HOME": str(tmp_path / "new"), "ORCH_PORT": str(other.getsockname()[1])}
        res = CliRunner().invoke(app, ["server"], env={**env, "ORCH_SERVICES_PORT": "0"})
        assert res.exit_code == 2 and "Address already in use" in res.output, res.output
        assert not (tmp_path / "new").exists()
    finally:
        other.close()
