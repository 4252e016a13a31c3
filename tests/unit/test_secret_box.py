"""Secrets' encryption at rest, their key (setting or key file), and their names and values."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from orch import config
from orch.bundle.manifest import parse_manifest
from orch.errors import InvalidInput
from orch.secret import box, names

VALUE = "sk-live-51Hx-q8z3"


def cfg(home: Path, **environ: str) -> config.Config:
    return config.load(home, environ=environ)


def test_the_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = box.load(cfg(home), create=True)
    path = home / box.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip())) == 32
    assert box.load(cfg(home), create=True).key == key.key == box.load(cfg(home)).key
    assert VALUE not in repr(key) and base64.b64encode(key.key).decode() not in repr(key)
    assert [p.name for p in home.iterdir()] == [box.KEY_FILE]  # no temporary file left


def test_seal_and_open_bind_the_value_to_its_workspace_and_name(tmp_path: Path) -> None:
    key = box.load(cfg(tmp_path), create=True)
    sealed = key.seal("ws_1", "API_KEY", VALUE)
    assert VALUE not in sealed and sealed != key.seal("ws_1", "API_KEY", VALUE)  # a fresh nonce
    assert key.open("ws_1", "API_KEY", sealed) == VALUE
    for ws, name in (("ws_2", "API_KEY"), ("ws_1", "OTHER")):
        with pytest.raises(box.Unreadable):
            key.open(ws, name, sealed)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    for bad in (tampered, "v1:not base64!", "v2:" + sealed[3:], ""):
        with pytest.raises(box.Unreadable):
            key.open("ws_1", "API_KEY", bad)


def test_another_key_cannot_open_it(tmp_path: Path) -> None:
    sealed = box.load(cfg(tmp_path / "a"), create=True).seal("ws", "K", VALUE)
    with pytest.raises(box.Unreadable):
        box.load(cfg(tmp_path / "b"), create=True).open("ws", "K", sealed)


def test_the_setting_wins_over_the_key_file_and_makes_none(tmp_path: Path) -> None:
    text = box.new_key_text()
    key = box.load(cfg(tmp_path, ORCH_SECRET_KEY=text), create=True)
    assert key.key == base64.b64decode(text) and key.origin == "the secret_key setting"
    assert not (tmp_path / box.KEY_FILE).exists()
    urlsafe = base64.urlsafe_b64encode(key.key).decode()
    assert box.load(cfg(tmp_path, ORCH_SECRET_KEY=urlsafe)).key == key.key


@pytest.mark.parametrize(
    "bad",
    ["hunter2", base64.b64encode(os.urandom(16)).decode(), "%%%%"],
    ids=["word", "16-bytes", "not-base64"],
)
def test_a_setting_that_is_not_a_key_is_refused_without_quoting_it(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidInput) as e:
        box.load(cfg(tmp_path, ORCH_SECRET_KEY=bad), create=True)
    assert "ORCH_SECRET_KEY" in e.value.message and "openssl rand -base64 32" in e.value.fix
    assert bad not in str(e.value)


def test_a_missing_or_damaged_key_file_is_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as e:
        box.load(cfg(tmp_path))
    assert "is missing" in e.value.message and "ORCH_SECRET_KEY" in e.value.fix
    (tmp_path / box.KEY_FILE).write_text("garbage\n")
    with pytest.raises(InvalidInput) as e:
        box.load(cfg(tmp_path), create=True)
    assert "is not a key" in e.value.message and "garbage" not in str(e.value)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "_X", "A", "K" * 128, "A1_B2"])
def test_good_names(name: str) -> None:
    assert names.check_name(name) == name


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("openai_key", "is not a secret name"),
        ("1KEY", "is not a secret name"),
        ("MY-KEY", "is not a secret name"),
        ("", "is not a secret name"),
        ("K" * 129, "is not a secret name"),
        ("KEY\x00", "is not a secret name"),
        ("ORCH_TOKEN", "reserves"),
        ("PATH", "orch sets in every sandbox"),
        ("HOME", "orch sets in every sandbox"),
        # orch sets none of these: the true reason (LD_PRELOAD was "a variable orch sets")
        ("LD_PRELOAD", "the dynamic loader reads it as every program starts"),
        ("LD_LIBRARY_PATH", "the dynamic loader reads it as every program starts"),
        ("NODE_PATH", "Node.js reads it as every Node program starts"),
        ("PYTHONPATH", "Python reads it as every Python program starts"),
        ("SHELL", "the shell and programs read it"),
    ],
)
def test_bad_names_say_why(name: str, said: str) -> None:
    with pytest.raises(InvalidInput) as e:
        names.check_name(name)
    assert said in e.value.message and e.value.fix and len(e.value.message) < 200


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("", "is empty"),
        ("x" * (64 * 1024 + 1), "at most 64 KiB"),
        ("€" * 22000, "at most 64 KiB"),  # 66000 bytes in 22000 characters
        ("a\x00b", "NUL"),
        ("\ud800", "not valid UTF-8"),
    ],
)
def test_bad_values_say_why_without_quoting_them(value: str, said: str) -> None:
    with pytest.raises(InvalidInput) as e:
        names.check_value(value)
    assert said in e.value.message and (len(value) < 3 or value not in str(e.value))


def test_values_up_to_64_kib() -> None:
    assert names.check_value("x" * 64 * 1024) and names.check_value("é")


def test_manifest_secrets() -> None:
    assert parse_manifest("secrets: [OPENAI_API_KEY, GH_TOKEN]\n").secrets == ["OPENAI_API_KEY", "GH_TOKEN"]
    assert parse_manifest("secrets:\n  - A\n  - B\n").secrets == ["A", "B"]
    assert parse_manifest("name: x\n").secrets == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("secrets: OPENAI_API_KEY\n", "line 1: secrets: 'OPENAI_API_KEY' is a single value, not a list"),
        ("secrets:\n", "secrets: names no secret"),
        ("secrets: {A: b}\n", "is not a list of names"),
        ("secrets:\n  - A\n  - lower\n", "line 3: secrets.1: 'lower' is not a secret name"),
        ("secrets: [ORCH_X]\n", "starts with ORCH_"),
        ("secrets: [PATH]\n", "orch sets in every sandbox"),
        ("secrets: [A, A]\n", "A is listed more than once"),
        ("env:\n  A: '1'\nsecrets: [A]\n", "line 3: secrets: A is also under env:"),
        ("secrets: [" + ", ".join(f"K{i}" for i in range(101)) + "]\n", "at most 100"),
    ],
)
def test_manifest_secrets_refused_with_the_line_and_a_fix(text: str, said: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_manifest(text)
    assert said in e.value.message and e.value.fix
