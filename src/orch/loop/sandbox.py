"""Where a loop's tools run: any `ToolSandbox`, and `HeldTools`, the one on a sandbox held open
(sandbox/held.py) that a run keeps for its whole loop. Every tool, file tools included, is a
process in the sandbox: nothing is read or written through the host's view of its files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from orch.errors import EngineError, InvalidInput
from orch.loop.clip import Clip
from orch.sandbox.held import NOT_EXECUTABLE, Held
from orch.sandbox.layout import WORKDIR


@dataclass(frozen=True)
class Finished:
    exit_code: int
    output: Clip  # stdout and stderr together, as they came
    timed_out: bool = False
    cancelled: bool = False  # stopped by the run's cancel (its exit code is the kill's, 137)


class SandboxGone(Exception):
    """The sandbox can run no more commands: the loop cannot go on."""


class ToolSandbox(Protocol):
    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        """Run `argv` in the working directory, `stdin` on its standard input, for at most
        `timeout` seconds; its output (stdout and stderr together) handed to `output`, which the
        caller chose (its limit, the secrets it masks) and `Finished` holds. SandboxGone when it
        cannot."""
        ...


def _never() -> bool:
    return False


@dataclass
class HeldTools:
    """Tools in a held sandbox, from the run's working directory; a cancel stops the command,
    and says so (`Finished.cancelled`): the loop then ends, rather than take the kill's 137 for
    the command's own exit."""

    held: Held
    workdir: str = WORKDIR
    should_stop: Callable[[], bool] = _never

    def exec(self, argv: Sequence[str], *, stdin: bytes | None, timeout: float, output: Clip) -> Finished:
        try:
            result = self.held.exec(
                argv,
                workdir=self.workdir,
                stdin=stdin or b"",
                timeout=timeout,
                on_stdout=output,
                on_stderr=output,
                should_stop=self.should_stop,
            )
        except EngineError as exc:
            raise SandboxGone(exc.message) from None
        except InvalidInput as exc:  # what the sandbox refused (its process limit, ...): the model's to see
            output(f"orch: {exc.message}\n".encode())
            return Finished(NOT_EXECUTABLE, output)
        return Finished(result.exit_code, output, result.timed_out, result.cancelled)
