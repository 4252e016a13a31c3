from __future__ import annotations

from pathlib import Path

import pytest

from orch import config
from orch.errors import InvalidInput


def test_defaults_come_from_home(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, environ={})
    assert cfg.database_url == f"sqlite:///{tmp_path / 'orch.db'}"
    assert cfg.port == 8750 and cfg.url == "" and cfg.token == ""


def test_env_beats_file_beats_default(tmp_path: Path) -> None:
    config.write_file(tmp_path / "config.toml", {"url": "http://file", "port": 9000})
    cfg = config.load(tmp_path, environ={"ORCH_URL": "http://env"})
    assert cfg.url == "http://env"
    assert cfg.port == 9000
    assert (tmp_path / "config.toml").stat().st_mode & 0o777 == 0o600


def test_orch_home_from_environment(tmp_path: Path) -> None:
    cfg = config.load(environ={"ORCH_HOME": str(tmp_path)})
    assert cfg.home == tmp_path.resolve()


def test_write_merges_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    config.write_file(path, {"url": "http://a"})
    config.write_file(path, {"token": 'we"ird\\'})
    assert config.read_file(path) == {"url": "http://a", "token": 'we"ird\\'}


def test_bad_values_are_plain_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="ORCH_BUILD_TIMEOUT"):
        config.load(tmp_path, environ={"ORCH_BUILD_TIMEOUT": "soon"})
    (tmp_path / "config.toml").write_text("url = [unclosed")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        config.load(tmp_path, environ={})


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for s in config.SETTINGS:
        assert f"`{s.env}`" in doc, f"{s.env} is missing from docs/configuration.md"
