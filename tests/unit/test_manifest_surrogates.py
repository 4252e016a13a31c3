"""A lone UTF-16 surrogate in orch.yaml (a double-quoted `\\ud800`, half of a pair) is refused
where the YAML is read, for every string of an agent's or a service's manifest: its line, the key
it is under and a fix, and never the surrogate itself in the message (no UTF-8 text, JSON or the
store, can hold it: a publish answered 500, PydanticSerializationError)."""

from __future__ import annotations

import pytest

from orch.bundle import parse_manifest
from orch.errors import InvalidInput

HALF = "is half of a UTF-16 surrogate pair, not a character, and no text can hold it alone."
LOOP = "loop:\n  model: m\n  provider: openai\n  base_url: http://127.0.0.1:8080/v1\n"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (f'name: mx\n{LOOP}  system: "a \\ud800 c"\n', "line 6: loop.system: \\ud800"),
        ('loop:\n  model: "m\\udc80"\n  provider: openai\n', "line 2: loop.model: \\udc80"),
        ('runtime:\n  command: "echo \\ud83d\\ude00"\n', "line 2: runtime.command: \\ud83d"),
        ('runtime:\n  command: [echo, "\\udfff"]\n', "line 2: runtime.command.1: \\udfff"),
        ('name: "\\ud800"\n', "line 1: name: \\ud800"),
        ('env:\n  A: ok\n  "K\\ud800": v\n', "line 3: env.K\\ud800: \\ud800"),  # a key
        ('secrets: [A]\nenv: {B: &x "\\udc00"}\nx: *x\n', "line 2: env.B: \\udc00"),  # where the anchor is
        ('"\\ud800"\n', "line 1: \\ud800"),
    ],
)
def test_a_lone_surrogate_is_refused_with_its_key_and_line(text: str, said: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text)
    message, fix = caught.value.message, caught.value.fix
    assert message == f"orch.yaml {said} {HALF}"
    assert fix is not None and fix.startswith("Write the character itself")
    message.encode()  # the message holds no surrogate: it can be sent and stored
    fix.encode()


def test_a_service_manifest_is_read_the_same_way() -> None:
    with pytest.raises(InvalidInput, match=r"line 2: run_command: \\ud800 is half"):
        parse_manifest('replicas: 1\nrun_command: "serve \\ud800"\n', loop_refused=("no loop", "drop it"))


def test_a_whole_character_written_as_one_escape_is_kept() -> None:
    manifest = parse_manifest(f'{LOOP}  system: "smile \\U0001F600 and \\u00e9"\n')
    assert manifest.loop is not None and manifest.loop.system == "smile \U0001f600 and \u00e9"
