"""The built-in tools: their JSON schemas, and each call run as processes in the sandbox. A tool
that fails (bad arguments, a missing file, a command's non-zero exit) is a result the model sees,
never the end of the loop."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orch.loop.clip import Clip
from orch.loop.model import ToolCall, ToolSpec
from orch.loop.sandbox import ToolSandbox

EDIT_LIMIT = 1024 * 1024  # the largest file edit_file rewrites; larger ones are bash's (sed, python)
_WRITE = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'  # the path is an argument, never script text
USAGE = 2  # exit code of a call whose arguments are wrong, as a shell's usage error


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
    output: str  # the tool's output, within the limit (the cut marked)

    def for_model(self) -> str:
        """What the model is sent: the output, and the exit code when it is not 0."""
        text = self.output or "(no output)"
        return text if self.exit_code == 0 else f"{text}\n[exit code {self.exit_code}]"


@dataclass(frozen=True)
class Tools:
    sandbox: ToolSandbox
    timeout: float  # seconds a call may take (less when the run's deadline is nearer)
    limit: int  # bytes of output kept

    def run(self, call: ToolCall, allowed: tuple[str, ...], timeout: float | None = None) -> ToolOutcome:
        """Run `call` (one of the `allowed` tools) in the sandbox."""
        if call.name not in allowed:
            return ToolOutcome(
                USAGE, f"error: there is no tool {call.name!r}; the tools are {', '.join(allowed)}."
            )
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            return ToolOutcome(USAGE, f"error: the arguments of {call.name} are not valid JSON.")
        if not isinstance(arguments, dict):
            return ToolOutcome(USAGE, f"error: the arguments of {call.name} are not a JSON object.")
        spec = SPECS[call.name]
        for name in spec.parameters["required"]:
            if not isinstance(arguments.get(name), str):
                return ToolOutcome(USAGE, f"error: {call.name} needs `{name}`, as text.")
        if "\x00" in arguments.get("path", ""):
            return ToolOutcome(USAGE, "error: a path cannot hold a NUL character.")
        return _RUNNERS[call.name](self, arguments, self.timeout if timeout is None else timeout)

    def _exec(
        self, argv: list[str], timeout: float, stdin: bytes | None = None, limit: int = 0
    ) -> tuple[int, Clip]:
        done = self.sandbox.exec(argv, stdin=stdin, timeout=timeout, limit=limit or self.limit)
        if done.timed_out:
            done.output(f"\n[timed out after {timeout:g} s]".encode())
        return done.exit_code, done.output

    def bash(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        code, output = self._exec(["bash", "-lc", args["command"]], timeout)
        return ToolOutcome(code, output.text())

    def read_file(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        code, output = self._exec(["cat", "--", args["path"]], timeout)
        return ToolOutcome(code, output.text())

    def write_file(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        return self._write(args["path"], args["content"].encode(), timeout, "wrote {size} bytes to {path}")

    def edit_file(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        path, old = args["path"], args["old"]
        if not old:
            return ToolOutcome(USAGE, "error: `old` is empty; give the exact text to replace.")
        code, output = self._exec(["cat", "--", path], timeout, limit=EDIT_LIMIT + 1)
        if code != 0:
            return ToolOutcome(code, output.text())
        if output.cut or output.size > EDIT_LIMIT:
            return ToolOutcome(1, f"error: {path} is larger than 1 MiB; edit it with bash (sed, python).")
        try:
            text = output.data().decode("utf-8")
        except UnicodeDecodeError:
            return ToolOutcome(1, f"error: {path} is not UTF-8 text; edit it with bash.")
        found = text.count(old)
        if found != 1:
            said = "does not contain `old`" if found == 0 else f"contains `old` {found} times"
            fix = "copy it exactly from the file" if found == 0 else "include more of the lines around it"
            return ToolOutcome(1, f"error: {path} {said}; {fix}, so that it occurs exactly once.")
        edited = text.replace(old, args["new"], 1).encode()
        return self._write(path, edited, timeout, "replaced 1 occurrence in {path}")

    def list_files(self, args: Mapping[str, str], timeout: float) -> ToolOutcome:
        code, output = self._exec(["ls", "-la", "--", args["path"] or "."], timeout)
        return ToolOutcome(code, output.text())

    def _write(self, path: str, data: bytes, timeout: float, done: str) -> ToolOutcome:
        code, output = self._exec(["sh", "-c", _WRITE, "write_file", path], timeout, stdin=data)
        if code != 0:
            return ToolOutcome(code, output.text())
        return ToolOutcome(0, done.format(size=len(data), path=path))


_RUNNERS: dict[str, Callable[[Tools, Mapping[str, str], float], ToolOutcome]] = {
    "bash": Tools.bash,
    "read_file": Tools.read_file,
    "write_file": Tools.write_file,
    "edit_file": Tools.edit_file,
    "list_files": Tools.list_files,
}
