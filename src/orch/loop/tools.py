"""The built-in tools: their JSON schemas, and each call run as processes in the sandbox. A tool
that fails (bad arguments, a missing file, a command's non-zero exit) is a result the model sees,
never the end of the loop; a sandbox that ends under it is (`ToolOutcome.gone`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orch.loop.clip import Clip
from orch.loop.model import WORD_SHOWN, ToolCall, ToolSpec, json_value
from orch.loop.sandbox import SandboxGone, ToolSandbox
from orch.secret.mask import Mask

EDIT_LIMIT = 1024 * 1024  # the largest file edit_file rewrites; larger ones are bash's (sed, python)
_WRITE = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'  # the path is an argument, never script text
# edit_file's read: a regular file's first EDIT_LIMIT + 1 bytes (one more says it is larger). A
# path that is there but is no regular file (a directory; a device or a FIFO, which would be read
# until the tool's timeout: /dev/urandom never ends) exits NOT_REGULAR at once; a missing one is
# head's to say.
NOT_REGULAR = 65
NOT_STARTED = 126  # a call the sandbox could not start, being gone: a shell's "cannot execute"
_REGULAR = f'[ -f "$1" ] || [ ! -e "$1" ] || exit {NOT_REGULAR}; '
_READ = _REGULAR + f'exec head -c {EDIT_LIMIT + 1} -- "$1"'
# read_file's: a regular file whole (its output clipped as any tool's), the rest refused as above.
_CAT = _REGULAR + 'exec cat -- "$1"'
USAGE = 2  # exit code of a call whose arguments are wrong, as a shell's usage error
_ARGV = {"command": "a command", "path": "a path"}  # arguments that become a process's argv


def _schema(**fields: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": text} for name, text in fields.items()},
        "required": list(fields),
        "additionalProperties": False,
    }


SPECS = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "bash",
            "Run a shell command with `bash -lc` in the working directory; returns its exit code and "
            "its output (stdout and stderr together).",
            _schema(command="The command line, as typed in a terminal."),
        ),
        ToolSpec(
            "read_file",
            "Read a text file; long files come back with their middle cut.",
            _schema(path="The file's path (relative to the working directory, or absolute)."),
        ),
        ToolSpec(
            "write_file",
            "Write a file whole, making its directories; replaces what was there.",
            _schema(path="The file's path.", content="The whole new content."),
        ),
        ToolSpec(
            "edit_file",
            "Replace one occurrence of `old` by `new` in a file; `old` must occur exactly once, so "
            "include enough of the lines around it.",
            _schema(path="The file's path.", old="The exact text to replace.", new="Its replacement."),
        ),
        ToolSpec(
            "list_files",
            "List a directory (`ls -la`).",
            _schema(path="The directory (`.` for the working directory)."),
        ),
    )
}


@dataclass(frozen=True)
class ToolOutcome:
    exit_code: int
    output: str  # the tool's output, within the limit (the cut marked), the run's secrets masked
    cancelled: bool = False  # the run was cancelled while it ran: the loop ends with this result
    gone: str = ""  # why the sandbox ended under it ("" when it did not): the loop ends with this result

    def for_model(self) -> str:
        """What the model is sent: the output, and the exit code when it is not 0."""
        text = self.output or "(no output)"
        return text if self.exit_code == 0 else f"{text}\n[exit code {self.exit_code}]"


class _Stopped(Exception):
    """The run was stopped while a tool ran (a cancel, the server's stop), or the sandbox ended
    under it (`gone`, why): its output so far."""

    def __init__(self, exit_code: int, output: Clip, gone: str = "") -> None:
        super().__init__(gone or "cancelled")
        self.exit_code, self.output, self.gone = exit_code, output, gone


@dataclass(frozen=True)
class Tools:
    sandbox: ToolSandbox
    timeout: float  # seconds a call may take (less when the run's deadline is nearer)
    limit: int  # bytes of output kept
    mask: Mask = field(default_factory=Mask)  # the run's secrets, masked in every output

    def run(self, call: ToolCall, allowed: tuple[str, ...], timeout: float | None = None) -> ToolOutcome:
        """Run `call` (one of the `allowed` tools) in the sandbox. Its output is masked before it
        is clipped (clip.py); the model's own words that a tool's answer quotes (a tool's name, a
        path) are masked, then cut to WORD_SHOWN characters (`_shown`)."""
        outcome = self._run(call, allowed, self.timeout if timeout is None else timeout)
        return replace(outcome, output=self.mask(outcome.output))

    def _run(self, call: ToolCall, allowed: tuple[str, ...], timeout: float) -> ToolOutcome:
        if call.name not in allowed:
            name = self._shown(call.name)
            offered = f"the tools are {', '.join(allowed)}" if allowed else "this loop offers no tools"
            return ToolOutcome(USAGE, f"error: there is no tool {name!r}; {offered}.")
        try:
            arguments = json_value(call.arguments or "{}")
        except ValueError:
            return ToolOutcome(USAGE, f"error: the arguments of {call.name} are not valid JSON.")
        if not isinstance(arguments, dict):
            return ToolOutcome(USAGE, f"error: the arguments of {call.name} are not a JSON object.")
        spec = SPECS[call.name]
        for name in spec.parameters["required"]:
            if not isinstance(arguments.get(name), str):
                return ToolOutcome(USAGE, f"error: {call.name} needs `{name}`, as text.")
        for name, what in _ARGV.items():  # no process's argument can hold a NUL
            if "\x00" in arguments.get(name, ""):
                return ToolOutcome(USAGE, f"error: {what} cannot hold a NUL character.")
        try:
            return _RUNNERS[call.name](self, arguments, timeout)
        except _Stopped as stop:
            if stop.gone:  # its sandbox ended under it: no end of the command's own
                stop.output(b"\n[the sandbox stopped]")
                return ToolOutcome(stop.exit_code, stop.output.text(), gone=stop.gone)
            stop.output(b"\n[stopped]")  # by a cancel, or by the server's stop
            return ToolOutcome(stop.exit_code, stop.output.text(), cancelled=True)

    def _shown(self, word: str) -> str:
        """A word of the model's own (a tool's name, a path) as a tool's answer quotes it: masked,
        then within WORD_SHOWN characters (never half a value, never a hostile path whole)."""
        return self.mask.quote(word, WORD_SHOWN)

    def _exec(
        self, argv: list[str], timeout: float, stdin: bytes | None = None, limit: int = 0, masked: bool = True
    ) -> tuple[int, Clip]:
        """Run `argv`; its exit code and output. `masked`: the run's secrets masked in the output,
        for the model and the events (a file edit_file reads and writes back is not)."""
        output = Clip(limit or self.limit, self.mask.values if masked else ())
        try:
            done = self.sandbox.exec(argv, stdin=stdin, timeout=timeout, output=output)
        except SandboxGone as exc:
            raise _Stopped(NOT_STARTED, output, str(exc)) from None
        if done.cancelled or done.gone:
            raise _Stopped(done.exit_code, done.output, done.gone)
        if done.timed_out:
            done.output(f"\n[timed out after {round(timeout, 1):g} s]".encode())
        return done.exit_code, done.output

    def bash(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        code, output = self._exec(["bash", "-lc", args["command"]], timeout)
        return ToolOutcome(code, output.text())

    def read_file(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        path = args["path"]
        code, output = self._exec(["sh", "-c", _CAT, "read_file", path], timeout)
        if code == NOT_REGULAR and output.size == 0:
            only = "read_file reads files only (list_files lists a directory)"
            return ToolOutcome(1, _not_regular(self._shown(path), only))
        return ToolOutcome(code, output.text())

    def write_file(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        return self._write(args["path"], args["content"].encode(), timeout, "wrote {size} bytes to {path}")

    def edit_file(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        path, old = args["path"], args["old"]
        if not old:
            return ToolOutcome(USAGE, "error: `old` is empty; give the exact text to replace.")
        try:
            code, output = self._exec(
                ["sh", "-c", _READ, "edit_file", path], timeout, limit=EDIT_LIMIT + 1, masked=False
            )
        except _Stopped as stop:
            raise _Stopped(stop.exit_code, self._said(stop.output), stop.gone) from None
        if code == NOT_REGULAR and output.size == 0:
            return ToolOutcome(1, _not_regular(self._shown(path), "edit_file edits files only"))
        if code != 0:
            return ToolOutcome(code, self._said(output).text())
        if output.size > EDIT_LIMIT:
            return ToolOutcome(
                1, f"error: {self._shown(path)} is larger than 1 MiB; edit it with bash (sed, python)."
            )
        try:
            text = output.data().decode("utf-8")
        except UnicodeDecodeError:
            return ToolOutcome(1, f"error: {self._shown(path)} is not UTF-8 text; edit it with bash.")
        found = text.count(old)
        if found != 1:
            said = "does not contain `old`" if found == 0 else f"contains `old` {found} times"
            fix = "copy it exactly from the file" if found == 0 else "include more of the lines around it"
            return ToolOutcome(
                1, f"error: {self._shown(path)} {said}; {fix}, so that it occurs exactly once."
            )
        edited = text.replace(old, args["new"], 1).encode()
        return self._write(path, edited, timeout, "replaced 1 occurrence in {path}")

    def _said(self, read: Clip) -> Clip:
        """What a read for edit_file that failed said (head's error, a timeout), as any tool's
        output is kept: within the tool's limit, the run's secrets masked, and no NUL. Read
        unmasked and up to 1 MiB, it may hold the file's own bytes."""
        said = Clip(self.limit, self.mask.values)
        said(read.text().replace("\x00", "\ufffd").encode())
        return said

    def list_files(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        code, output = self._exec(["ls", "-la", "--", args["path"] or "."], timeout)
        return ToolOutcome(code, output.text())

    def _write(self, path: str, data: bytes, timeout: float, done: str) -> ToolOutcome:
        code, output = self._exec(["sh", "-c", _WRITE, "write_file", path], timeout, stdin=data)
        if code != 0:
            return ToolOutcome(code, output.text())
        return ToolOutcome(0, done.format(size=len(data), path=self._shown(path)))


_RUNNERS: dict[str, Callable[[Tools, Mapping[str, str], float], ToolOutcome]] = {
    "bash": Tools.bash,
    "read_file": Tools.read_file,
    "write_file": Tools.write_file,
    "edit_file": Tools.edit_file,
    "list_files": Tools.list_files,
}


def _not_regular(path: str, only: str) -> str:
    """A file tool's answer for a path that is there but is no regular file: a device such as
    /dev/urandom, or a FIFO, would be read until the tool's timeout."""
    return f"error: {path} is not a regular file (a directory, a device or a FIFO, say); {only}."
