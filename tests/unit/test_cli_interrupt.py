"""Ctrl-C in the first moments of a command, while orch's modules load, ends it as any Ctrl-C
does: `Interrupted.` and exit 130, never a traceback of an import (docs/cli.md). The signal is
sent by the process to itself when a given module is imported (an import hook), so it lands
inside that import every time, with no timing to guess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs `orch ARGS`, sending itself SIGINT when module `sys.argv[1]` is first imported.
# Python's own SIGINT handler first, as a terminal's command has it: a test run in the
# background (`nohup`, `&`) inherits SIGINT ignored, which orch then rightly leaves ignored.
INTERRUPTED_AT = """
import importlib.abc, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
target = sys.argv.pop(1)
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target_=None):
        if name == target:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Hook())
sys.argv[0] = "orch"
from orch.cli.main import main
main()
"""


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("typer", ["env", "list"]),  # the entry point's own imports
        ("orch.cli.env", ["env", "list"]),  # the command's module, imported as click looks it up
        ("orch.cli.run", ["run", "sleeper"]),
    ],
)
def test_ctrl_c_while_modules_load_exits_130_quietly(tmp_path: Path, module: str, args: list[str]) -> None:
    env = {**os.environ, "ORCH_HOME": str(tmp_path), "ORCH_URL": "http://127.0.0.1:9", "ORCH_TOKEN": "t"}
    res = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_AT, module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (res.returncode, res.stderr) == (130, "Interrupted.\n")


def test_ctrl_c_inside_a_command_is_still_the_command_s_to_handle() -> None:
    """In a command's code Ctrl-C raises KeyboardInterrupt (for `orch run` to cancel its run);
    a process that only imports the CLI (a test, a library) keeps Python's own handler."""
    import signal

    # As a terminal's process has it (a test run in the background inherits it ignored).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from orch.cli import main  # noqa: F401 - its import installs and then gives back the handler
        from orch.cli.output import command

        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        seen = []

        @command
        def body() -> None:
            seen.append(signal.getsignal(signal.SIGINT))

        body()
        assert seen == [signal.default_int_handler]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
