"""Where a loop's tools run: any `ToolSandbox`, and `HeldTools`, the one on a sandbox held open
(sandbox/held.py) that a run keeps for its whole loop. Every tool, file tools included, is a
process in the sandbox: nothing is read or written through the host's view of its files.

A sandbox that ends as a whole while a tool runs (its init killed, out of memory, the runtime's
crash) kills the tool's processes with it: their 137 is no end of the command's own, so it is
said (`Finished.gone`), and the loop ends there rather than hand the model a result from a
sandbox that is gone (docs/loop.md, "Limits")."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from orch.errors import EngineError, InvalidInput
from orch.loop.clip import Clip
from orch.sandbox.held import KILLED, NOT_EXECUTABLE, ExecResult, Held
from orch.sandbox.layout import WORKDIR
from orch.services.sandboxes import seen_ended  # a killed command's sandbox, seen ended


@dataclass(frozen=True)
class Finished:
    exit_code: int
    output: Clip  # stdout and stderr together, as they came
    timed_out: bool = False
    cancelled: bool = False  # stopped by the run's cancel (its exit code is the kill's, 137)
    gone: str = ""  # why the sandbox itself ended under the command ("" when it lives on)


class SandboxGone(Exception):
    """The sandbox can run no more commands: the loop cannot go on. Its message says why, to the
    run's user (no runtime's name of the sandbox)."""


# Why a held sandbox ended, when nothing says more: its init is what ended (catatonit; under
# gVisor, its kernel), and everything in it went with it.
_ENDED = "its init process ended: killed, or out of memory"
_KILLED_UNDER = f"it ended while a tool ran, and everything in it was killed ({_ENDED})"
_GONE_BEFORE = f"it was no longer running when a tool was to start ({_ENDED})"
# held.py's line after a command the kernel killed at the sandbox's memory limit (runc): when
# the sandbox ended with it, the limit is why.
_MEMORY = re.compile(rb"orch: killed: the sandbox's memory limit \(([0-9.]+ [KMGT]?i?B)\) was reached\n")


class ToolSandbox(Protocol):
    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        """Run `argv` in the working directory, `stdin` on its standard input, for at most
        `timeout` seconds; its output (stdout and stderr together) handed to `output`, which the
        caller chose (its limit, the secrets it masks) and `Finished` holds. SandboxGone when it
        cannot; `Finished.gone` when the sandbox itself ended while the command ran."""
        ...


def _never() -> bool:
    return False


@dataclass
class HeldTools:
    """Tools in a held sandbox, from the run's working directory; a cancel stops the command,
    and says so (`Finished.cancelled`), as does the sandbox's own end under it (`Finished.gone`):
    the loop then ends, rather than take the kill's 137 for the command's own exit."""

    held: Held
    workdir: str = WORKDIR
    should_stop: Callable[[], bool] = _never

    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        limit: list[str] = []  # the memory limit held.py says the kernel's kill was at

        def on_stderr(data: bytes) -> None:
            if found := _MEMORY.fullmatch(data):
                limit.append(found[1].decode())
            output(data)

        try:
            result = self.held.exec(
                argv,
                workdir=self.workdir,
                stdin=stdin or b"",
                timeout=timeout,
                on_stdout=output,
                on_stderr=on_stderr,
                should_stop=self.should_stop,
            )
        except EngineError as exc:
            raise SandboxGone(self._unnamed(exc.message) if self.held.alive() else _GONE_BEFORE) from None
        except InvalidInput as exc:  # what the sandbox refused (its process limit, ...): the model's to see
            output(f"orch: {exc.message}\n".encode())
            return Finished(NOT_EXECUTABLE, output)
        gone = self._gone(result, limit[-1] if limit else None)
        return Finished(result.exit_code, output, result.timed_out, result.cancelled, gone)

    def _unnamed(self, message: str) -> str:
        """`message` (the launcher's, or its runtime's words) without the runtime's name of the
        sandbox, which is the platform's, not the run's user's."""
        name = self.held.name
        return message.replace(f"sandbox {name}", "sandbox").replace(name, "the sandbox")

    def _gone(self, result: ExecResult, limit: str | None) -> str:
        """Why the sandbox ended under a command that ended by itself ("" when it lives on), as
        sandboxes on demand tell it (services/sandboxes.py): a killed command's sandbox may be
        seen ended a moment after its answer (gVisor). A cancel's kill is the cancel's to say."""
        if result.cancelled or self.should_stop():
            return ""
        if result.exit_code == KILLED:
            seen_ended(self.held)
        if self.held.alive():
            return ""  # a command the memory limit killed alone: the model's to see, as any end
        if limit is not None:
            return f"its memory limit ({limit}) was reached while a tool ran, and everything in it was killed"
        return _KILLED_UNDER
