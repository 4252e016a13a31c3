"""config.toml as its owner wrote it: `orch server` and `orch login` set url and token and keep
every other line (a list setting, comments) as it was, so the next start reads what the owner
wrote; a file that can't be read as UTF-8 TOML is one sentence (exit 2), never a bug report."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch import config
from orch.errors import InvalidInput

OWNED = (
    "# operator settings\n"
    'model_endpoints = ["https://api.openai.com/v1", "http://127.0.0.1:11434/v1"]  # two\n'
    "\n"
    "run_workers = 3\n"
)


def test_writing_url_and_token_keeps_every_other_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(OWNED)
    config.write_file(path, {"url": "http://127.0.0.1:44307", "token": "orch_abc"})
    assert path.read_text() == OWNED + 'url = "http://127.0.0.1:44307"\ntoken = "orch_abc"\n'
    # The next start (a second write, then a load) reads the list as the list it is.
    config.write_file(path, {"url": "http://127.0.0.1:5"})
    assert path.read_text() == OWNED + 'url = "http://127.0.0.1:5"\ntoken = "orch_abc"\n'
    cfg = config.load(tmp_path, environ={})
    assert cfg.model_endpoints == ("https://api.openai.com/v1", "http://127.0.0.1:11434/v1")
    assert (cfg.url, cfg.token, cfg.run_workers) == ("http://127.0.0.1:5", "orch_abc", 3)
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_new_file_is_for_its_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "home" / "config.toml"
    config.write_file(path, {"url": "http://a", "token": 'we"ird\\'})
    assert config.read_file(path) == {"url": "http://a", "token": 'we"ird\\'}
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_file_that_is_not_toml_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("url = [unclosed\n")
    with pytest.raises(InvalidInput, match="is not valid TOML"):
        config.write_file(path, {"url": "http://a"})
    assert path.read_text() == "url = [unclosed\n"


def test_a_config_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInput) as e:
        config.load(tmp_path, environ={})
    assert e.value.message == f"{tmp_path / 'config.toml'} is not UTF-8 text (byte 0)."
    assert e.value.fix == "Save it as UTF-8 text, or delete it."


def test_a_config_file_that_is_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    with pytest.raises(InvalidInput, match=r"config\.toml is a directory, not a settings file"):
        config.load(tmp_path, environ={})


def test_an_orch_home_that_is_a_file_says_so(tmp_path: Path) -> None:
    home = tmp_path / "h3file"
    home.write_text("x\n")
    with pytest.raises(InvalidInput) as e:
        config.load(environ={"ORCH_HOME": str(home)})
    assert e.value.message.startswith(f"ORCH_HOME {home} is not a directory")
    assert "Set ORCH_HOME to a directory" in e.value.fix


def test_a_config_file_that_is_a_pipe_or_a_device_is_refused_without_opening_it(tmp_path: Path) -> None:
    """A FIFO (or a link to one) as config.toml: its open waited for a writer for ever, and every
    orch command with it; a device read as a file (/dev/null as no settings)."""
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, Path("/dev/null"), Path("/dev/zero")):
        home = tmp_path / f"home-{target.name}"
        home.mkdir()
        (home / "config.toml").symlink_to(target)
        said: list[BaseException] = []

        def load(home: Path = home, said: list[BaseException] = said) -> None:
            try:
                config.load(home, environ={})
            except BaseException as e:  # said back to the test
                said.append(e)

        loading = threading.Thread(target=load, daemon=True)
        loading.start()
        loading.join(5)
        if loading.is_alive():  # waiting in open(): a writer lets it go, so the test ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            loading.join(5)
            pytest.fail(f"config.toml linking to {target} was opened, and waited for a writer")
        assert len(said) == 1 and isinstance(said[0], InvalidInput), (target, said)
        assert said[0].message.startswith(f"{home / 'config.toml'} is not a regular file"), said[0].message
        assert "Remove it" in said[0].fix
