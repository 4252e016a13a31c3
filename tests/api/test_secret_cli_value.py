"""`orch secret set` takes its value one way: found by a tester, `echo foo | orch secret set E14
--value bar` stored bar and said nothing of the standard input it ignored."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from orch.cli import secret
from tests.api.test_secrets import Invoke, cli  # noqa: F401 - the fixture


def test_a_value_given_two_ways_is_refused(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(secret, "_piped", lambda: True)
    res = cli("secret", "set", "E14", "--value", "bar", input="foo\n")
    assert res.exit_code == 2, res.output
    assert "The value was given two ways: --value, and on standard input." in res.output
    assert json.loads(cli("secret", "list", "--json").output) == []  # nothing stored
    monkeypatch.setattr(secret, "_piped", lambda: False)  # a terminal, /dev/null: --value is it
    assert cli("secret", "set", "E14", "--value", "bar").exit_code == 0


def test_what_brings_a_value_on_standard_input() -> None:
    read, write = os.pipe()
    with os.fdopen(read) as pipe, os.fdopen(write, "w"):
        assert secret._piped(pipe)  # `echo foo | orch secret set ...`, written yet or not
    with open(os.devnull) as null:
        assert not secret._piped(null)  # cron, CI: nothing was given
    with tempfile.TemporaryFile("w+") as file:
        assert not secret._piped(file)  # an empty file brings nothing
        file.write("key")
        file.flush()
        assert secret._piped(file)  # `< key.txt`
    closed = open(os.devnull)  # noqa: SIM115
    closed.close()
    assert not secret._piped(closed)
