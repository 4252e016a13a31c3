"""Ctrl-C outside a command's own code: while orch's modules load (the first ~0.1 s of any
command), while click reads the command line, and after the command has returned. There, no
code has anything to undo, so Ctrl-C ends the process at once with 130 and `Interrupted.`, as
everywhere else (docs/cli.md), never with a traceback of an import. Inside a command's code
(`output.command`) Python's own handler raises KeyboardInterrupt, for the command to clean up
(`orch run` cancels its run) and say it.

Imported first by the entry point, before anything heavy; it imports only `os` and `signal`.
"""

from __future__ import annotations

import os
import signal
from typing import Any

INTERRUPTED = 130


def _end(_signum: int, _frame: object) -> None:
    os.write(2, b"Interrupted.\n")
    os._exit(INTERRUPTED)  # nothing started is left behind: no command code has run


def _swap(old: Any, new: Any) -> Any:
    """Install `new` as SIGINT's handler if `old` is the one in place, and return what was.
    A SIGINT that is ignored (a background job's) stays ignored, and one a command set itself
    (`orch sandbox create`) stays; outside the main thread (a library's call) nothing changes."""
    try:
        current = signal.getsignal(signal.SIGINT)
        if current is old:
            signal.signal(signal.SIGINT, new)
        return current
    except ValueError:  # not the main thread
        return None


_entry_point = False  # this process is the `orch` command (not a test or a library's import)


def outside_commands() -> Any:
    """From now on, until `inside_command`, Ctrl-C ends the process quietly with 130."""
    return _swap(signal.default_int_handler, _end)


def entry_point() -> None:
    """This process is the `orch` command: Ctrl-C outside a command's code ends it (and again
    after the command, see `after_command`)."""
    global _entry_point
    _entry_point = True
    outside_commands()


def inside_command() -> None:
    """From now on Ctrl-C raises KeyboardInterrupt (Python's own handler)."""
    _swap(_end, signal.default_int_handler)


def _first(_signum: int, _frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the answer is decided, through the exit too
    raise KeyboardInterrupt


class FirstOnly:
    """Inside it, the first Ctrl-C raises KeyboardInterrupt and every later one is ignored, until
    the process is gone: for a command whose answer to Ctrl-C the first decides (following a
    log: 0), so that a second, a moment later, can't turn it into 130 (`timeout -s INT` signals
    the command, then its process group: two SIGINTs). Left without one, Ctrl-C is Python's
    own again."""

    def __enter__(self) -> None:
        _swap(signal.default_int_handler, _first)

    def __exit__(self, *_exc: object) -> None:
        _swap(_first, signal.default_int_handler)


def once_more() -> None:
    """After FirstOnly's first Ctrl-C: the next one raises KeyboardInterrupt too (and those after
    it are ignored), for a wait the first began that a second may cut short (`orch run --json`
    waits for the run it cancelled to end)."""
    _swap(signal.SIG_IGN, _first)


def after_command() -> None:
    """A command's code has returned: in the `orch` command, Ctrl-C ends it quietly again (at the
    interpreter's exit a KeyboardInterrupt would be a traceback); elsewhere it stays Python's."""
    if _entry_point:
        outside_commands()
