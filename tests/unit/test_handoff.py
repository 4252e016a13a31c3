"""The message that hands a run to a warm sandbox's helper (sandbox/handoff.py); the helper itself
is run in tests/integration/test_warm_sandboxes.py."""

from __future__ import annotations

import pytest

from orch.sandbox import handoff


def test_the_message_holds_any_text_but_nul() -> None:
    msg = handoff.message(["sh", "-c", "x"], ["A=1", "B=two\nlines", "C=é"])
    assert msg[:4] == b"orch" and int.from_bytes(msg[4:8], "big") == len(msg) - 8
    assert msg[8:] == "\0\x003\0sh\0-c\0x\0A=1\0B=two\nlines\0C=é\0".encode()  # nothing to copy
    with pytest.raises(ValueError, match="NUL"):
        handoff.message(["sh"], ["A=\0"])


def test_the_message_names_what_to_copy_first() -> None:
    msg = handoff.message(["true"], ["A=1"], copy=("/opt/orch/bundle", "/home/user/work"))
    assert msg[8:] == b"/opt/orch/bundle\0/home/user/work\x001\0true\0A=1\0"
