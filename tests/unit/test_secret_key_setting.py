"""The secret key's setting and file as `orch server` takes them at start: a setting of spaces
alone is refused as no key (found by a tester: it was taken as unset, and the key file used), and
a key file open to other users is said once in the log (found by a tester: used without a word)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from orch import config
from orch.cli.main import app
from orch.errors import InvalidInput
from orch.secret import box
from orch.server import main

REFUSED = "The secret_key setting (ORCH_SECRET_KEY or config.toml) is not a key"


def cfg(home: Path, **environ: str) -> config.Config:
    return config.load(home, environ=environ)


@pytest.mark.parametrize("blank", [" ", "\t", " \n "])
def test_a_setting_of_spaces_alone_is_refused_not_taken_as_unset(tmp_path: Path, blank: str) -> None:
    box.load(cfg(tmp_path), create=True)  # a key file it could have fallen back on
    with pytest.raises(InvalidInput) as e:
        box.load(cfg(tmp_path, ORCH_SECRET_KEY=blank))
    assert e.value.message.startswith(REFUSED) and "openssl rand -base64 32" in e.value.fix


def test_an_empty_setting_is_unset_and_a_key_with_a_newline_is_a_key(tmp_path: Path) -> None:
    made = box.load(cfg(tmp_path), create=True)
    assert box.load(cfg(tmp_path, ORCH_SECRET_KEY="")).key == made.key  # the key file's
    text = box.new_key_text()
    assert box.load(cfg(tmp_path, ORCH_SECRET_KEY=f" {text}\n")).origin == "the secret_key setting"


def test_orch_server_refuses_a_setting_of_spaces_before_the_home_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def platform(*_: object, **__: object) -> None:
        raise AssertionError("the server went on to make its platform")

    monkeypatch.setattr("orch.server.main.machine.platform", platform)
    home = tmp_path / "home"
    env = {"ORCH_HOME": str(home), "ORCH_SECRET_KEY": " ", "ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0"}
    res = CliRunner().invoke(app, ["server"], env=env)
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.output.startswith(f"✗ {REFUSED}"), res.output
    assert not home.exists()


def test_a_key_file_open_to_others_is_said_with_the_fix(tmp_path: Path) -> None:
    box.load(cfg(tmp_path), create=True)
    path = tmp_path / box.KEY_FILE
    assert box.loose_key_file(cfg(tmp_path)) is None  # as the server makes it: 0600
    path.chmod(0o644)
    said = box.loose_key_file(cfg(tmp_path))
    assert said == (
        f"The secret key file {path} is open to other users than its owner (mode 0644): whoever "
        f"reads it can decrypt every stored secret. Run `chmod 600 {path}`."
    )
    path.chmod(0o640)
    assert "(mode 0640)" in str(box.loose_key_file(cfg(tmp_path)))
    # Not read when the setting is the key; nothing to say of a file that is not there.
    assert box.loose_key_file(cfg(tmp_path, ORCH_SECRET_KEY=box.new_key_text())) is None
    assert box.loose_key_file(cfg(tmp_path / "none")) is None
    assert box.load(cfg(tmp_path)).origin == str(path)  # still used: said, not refused


def test_a_server_start_with_a_key_file_open_to_others_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's start up to uvicorn's, with the platform, the app and uvicorn's server faked:
    what it prints is what a real start prints before it serves."""
    box.load(cfg(tmp_path), create=True)
    path = tmp_path / box.KEY_FILE
    path.chmod(0o644)
    app_ = SimpleNamespace(state=SimpleNamespace(services_app=None))
    monkeypatch.setattr(main.machine, "platform", lambda c: SimpleNamespace(config=c))
    monkeypatch.setattr(main, "create_app", lambda platform: app_)
    monkeypatch.setattr(main.workspaces, "bootstrap", lambda platform, token: None)
    monkeypatch.setattr(main, "freeze_startup", lambda: 0)
    monkeypatch.setattr(main, "raise_open_files", lambda: None)
    monkeypatch.setattr(main.log_setup, "configure", lambda: None)  # the test run's logging stays
    started: list[object] = []
    server = SimpleNamespace(run=lambda sockets: started.append(sockets))
    monkeypatch.setattr(main, "_Server", lambda config, platform: server)
    main.serve(cfg(tmp_path, ORCH_PORT="0", ORCH_SERVICES_PORT="0", ORCH_HOST="127.0.0.1"))
    err = capsys.readouterr().err
    assert len(started) == 1
    assert err.count(f"orch server: warning: The secret key file {path} is open to other users") == 1
    assert f"Run `chmod 600 {path}`." in err
    assert os.stat(path).st_mode & 0o777 == 0o644  # left as it is: the operator's to change
