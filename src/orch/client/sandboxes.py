"""Sandboxes on demand: hold one open, run commands in it, move files in and out
(`client.sandboxes`, `Sandbox`, `ExecResult`)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from orch.client.exec_stream import exec_events
from orch.client.records import (
    ENVIRONMENTS,
    EnvironmentRef,
    Resource,
    number,
    text,
    truth,
    when,
    whole_number,
)
from orch.client.transport import (
    CREATE_TIMEOUT,
    Transport,
    as_dict,
    body_bytes,
    check_json,
    flag,
    function,
    kind_of,
    listed,
    python_number,
    seconds,
    segment,
    text_name,
    whole_seconds,
)
from orch.errors import InvalidInput, NotFound, OrchError, ServerUnreachable

NDJSON = "application/x-ndjson"
MARGIN = 30.0  # seconds an exec's answer may take beyond the command's own timeout
LONGEST_WAIT = 365 * 86400.0  # seconds: longer than any sandbox's lifetime; a socket can keep it
LISTS = "orch sandbox list"  # what shows a sandbox's id, for a fix
ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # orch.models' ids: no i, l, o, u
CANCEL_TIMEOUT = 10.0  # seconds a create cut short waits for the server to remove what it made
# The most memory a sandbox may have (orch.bundle.resources), as said and as written.
MOST_MEMORY_BYTES, MOST_MEMORY, MOST_MEMORY_WRITTEN = 64 * 1024**3, "64 GiB", "64Gi"


@dataclass(frozen=True)
class ExecResult:
    exit_code: int  # the command's; 124 when it timed out, 127 when it was not found
    stdout: str
    stderr: str
    duration: float  # seconds the command ran
    timed_out: bool = False
    truncated: bool = False  # output past the server's limit per stream was cut (not when streamed)


def command_line(command: str | Sequence[str]) -> list[str]:
    """The argument vector of `command`: a list as given, a string run by `sh -c`."""
    if isinstance(command, str):
        check_json(command, "command")  # said as the string given, not as `command[2]`
        if not command.strip():  # `sh -c ""` runs nothing; the API refuses an empty command
            raise InvalidInput(
                "`command` is empty: it names no program to run.",
                'Pass the command to run, such as "ls -l" (or ["ls", "-l"]).',
            )
        return ["sh", "-c", command]
    if not isinstance(command, Sequence) or isinstance(command, bytes | bytearray):
        raise InvalidInput(
            f"`command` is {kind_of(command)}; it must be a str (run by sh -c) or a list of arguments.",
            'Pass ["ls", "-l"], or "ls -l" for the shell.',
        )
    return list(command)


@dataclass(eq=False)
class Sandbox:
    """A sandbox held open for commands and files; removed by `remove()`, at the end of a `with`
    block, or by the server after `timeout` idle seconds."""

    id: str
    status: str  # starting, running, removed or failed
    environment: EnvironmentRef
    isolation: str | None
    memory_bytes: int | None
    cpus: float | None
    network: bool
    timeout: int | None  # idle seconds before the server removes it
    created_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None
    reason: str | None  # why it failed or was removed
    node: str | None  # the cluster node that holds it; None on one machine
    _http: Transport = field(repr=False)

    @classmethod
    def _from_api(cls, data: Mapping[str, Any], http: Transport) -> Sandbox:
        return cls(**_fields(data), _http=http)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.status != "removed":
            try:
                self.remove()
            except NotFound:  # removed already (its idle timeout, or by someone else)
                self.status = "removed"
            except OrchError as failed:
                if error is None:
                    raise
                # The block's own exception goes on, the one its caller needs; the failed removal
                # is a note on it (the sandbox ends at its idle timeout, or the server's restart).
                error.add_note(f"The sandbox {self.id} was not removed at the end of the block: {failed}")

    @property
    def _path(self) -> str:
        return f"/v1/sandboxes/{segment(self.id, LISTS)}"

    def refresh(self) -> Sandbox:
        """Read the sandbox's state again."""
        for name, value in _fields(self._http.get(self._path)).items():
            setattr(self, name, value)
        return self

    def exec(
        self,
        command: str | Sequence[str],
        timeout: float | None = None,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: str | None = None,
    ) -> ExecResult:
        """Run a command in the sandbox and wait for it: a list of arguments, or a string that
        `sh -c` runs. With `on_stdout` or `on_stderr`, output reaches them as it comes; the
        result holds all of it either way. A command that exits non-zero is a result, not an
        error."""
        function(on_stdout, "on_stdout")  # before the command runs: it is called as output comes
        function(on_stderr, "on_stderr")
        body = {
            "command": command_line(command),
            "timeout": timeout if python_number(timeout) is None else python_number(timeout),
            "env": as_dict(env, "env"),
            "workdir": workdir,
            "stdin": stdin,
        }
        wait = None
        if timeout is not None:  # one out of the server's range is the server's to refuse
            wait = (
                min(max(seconds(timeout, "The command's timeout", waited=False), 0.0), LONGEST_WAIT) + MARGIN
            )
        waits = {"timeout": self._http.waiting(wait)}
        if on_stdout is None and on_stderr is None:
            data = self._http.post(f"{self._path}/exec", json=body, **waits)
            return ExecResult(
                whole_number(data, "exit_code"),
                text(data, "stdout"),
                text(data, "stderr"),
                number(data, "duration"),
                truth(data, "timed_out", False),
                truth(data, "truncated", False),
            )
        handlers = {"stdout": on_stdout, "stderr": on_stderr}
        output: dict[str, list[str]] = {"stdout": [], "stderr": []}
        headers = {"Accept": NDJSON}
        with self._http.stream("POST", f"{self._path}/exec", json=body, headers=headers, **waits) as resp:
            for stream, event in exec_events(resp, self._http.url):
                if stream == "end":
                    out, err = "".join(output["stdout"]), "".join(output["stderr"])
                    took, timed_out = number(event, "duration", 0.0), truth(event, "timed_out", False)
                    return ExecResult(event["exit_code"], out, err, took, timed_out)
                output[stream].append(event["data"])
                handler = handlers.get(stream)
                if handler is not None:
                    handler(event["data"])
        raise OrchError(
            f"The answer to the command in sandbox {self.id} ended before its exit code.",
            "The server may have stopped; check it, then run the command again.",
        )

    def write_file(self, path: str, data: str | bytes | bytearray | memoryview) -> None:
        """Write a file in the sandbox (a relative path is under its working directory,
        /home/user); text is written as UTF-8, a bytearray or memoryview as bytes. Other data
        (None, a number, an iterator) raises InvalidInput and writes nothing."""
        content = body_bytes(data, "The data to write")  # None would empty the file
        headers = {"Content-Type": "application/octet-stream"}
        self._http.put(f"{self._path}/files", params={"path": _file(path)}, content=content, headers=headers)

    def read_file(self, path: str) -> bytes:
        """A file of the sandbox, as bytes."""
        return self._http.send("GET", f"{self._path}/files", params={"path": _file(path)}).content

    def remove(self) -> None:
        """Remove the sandbox and everything in it."""
        self._http.delete(self._path)
        self.status = "removed"


def _file(path: str) -> str:
    """A path in the sandbox, which is text: a number or None would name a file by its str()."""
    if not isinstance(path, str):
        raise InvalidInput(
            f"The file's path is {kind_of(path)}, not text.",
            "Pass the path in the sandbox as a str, such as 'data.csv'.",
        )
    if "\x00" in path:  # the server would say it of the URL's query, which the caller never wrote
        raise InvalidInput("The file's path holds a NUL character, which no path can.", "Remove it.")
    return path


def new_sandbox_id() -> str:
    """A sandbox id as the server makes them (orch.models.new_id, CHOSEN_ID of
    services/sandboxes.py), chosen by the client: sbx_ and 10 of 0-9 and a-z without i, l, o, u."""
    return "sbx_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(10))


# A size as orch.sizes reads one, and in the units past its own (petabytes and more), which the
# server calls no size: `memory` in them, or in digits past the 40 characters the server reads,
# is far past the most a sandbox may have (MOST_MEMORY), which is what the client says.
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtpezy]i?)?b?\s*", re.IGNORECASE)
_POWERS = "kmgtpezy"


def _memory(memory: object) -> None:
    """InvalidInput, before any request, for a `memory` larger than a sandbox may have that the
    server would call no size ("1Ei", or a number too long for it to read); the server judges
    every other value (and says what is wrong with it)."""
    if not isinstance(memory, str):
        return
    match = _SIZE.fullmatch(memory)
    unit = ((match[2] if match else None) or "").lower()
    if match is None or (len(memory) <= 40 and unit[:1] in ("", *"kmgt")):  # the server reads it
        return
    scale = (1024 if unit.endswith("i") else 1000) ** (_POWERS.index(unit[0]) + 1) if unit else 1
    if float(match[1]) * scale > MOST_MEMORY_BYTES:
        shown = memory if len(memory) <= 40 else memory[:20] + "…"
        raise InvalidInput(
            f"`memory` is {shown!r}, more than a sandbox may have: at most {MOST_MEMORY}.",
            f"Pass a size up to {MOST_MEMORY_WRITTEN}, such as memory='512Mi' or memory='4Gi'.",
        )


def _fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        # Null only where orch sends it (`expires_at`, `reason`, `node`); a field a server older
        # than it leaves out is None (or False).
        "id": text(data, "id"),
        "status": text(data, "status"),
        "environment": EnvironmentRef._of(data),
        "isolation": text(data, "isolation", None),
        "memory_bytes": whole_number(data, "memory_bytes", None),
        "cpus": number(data, "cpus", None),
        "network": truth(data, "network", False),
        "timeout": whole_number(data, "timeout", None),
        "created_at": when(data, "created_at"),
        "last_used_at": when(data, "last_used_at"),
        "expires_at": when(data, "expires_at"),
        "reason": text(data, "reason", null=True),
        "node": text(data, "node", null=True),
    }


class Sandboxes(Resource):
    """`client.sandboxes`: sandboxes held open, with the isolation and limits of a run's."""

    def create(
        self,
        environment: str | None = None,
        memory: str | None = None,
        cpus: float | None = None,
        timeout: int | None = None,
        network: bool = False,
    ) -> Sandbox:
        """Start a sandbox and hold it open: in `environment` (name or id; default: the
        workspace's default environment, else python), with `memory` (e.g. "512Mi", the default)
        and `cpus` (default 1), removed after `timeout` idle seconds (default 600), reaching the
        internet only if `network`. A workspace holding its limit of open sandboxes gets
        LimitReached."""
        # "" would be the default environment, without a word
        text_name(environment, "environment", ENVIRONMENTS)
        _memory(memory)
        # The id is chosen here, so that a create cut short (Ctrl-C, a connection broken or timed
        # out before its answer was read) can be undone by it: the server may have made the
        # sandbox, and its answer, the only other place the id is said, was never read.
        sandbox_id = new_sandbox_id()
        body = {
            "environment": environment,
            "memory": memory,
            "cpus": cpus if python_number(cpus) is None else python_number(cpus),
            "timeout": whole_seconds(timeout, "timeout", 600),  # 600.0 is 600
            "network": network,
            "id": sandbox_id,
        }
        try:
            created = self._http.post("/v1/sandboxes", json=body, timeout=self._http.waiting(CREATE_TIMEOUT))
        except (KeyboardInterrupt, ServerUnreachable) as cut:
            if isinstance(cut, ServerUnreachable) and cut.never_sent:
                raise  # no connection was made: nothing was started, nothing to remove
            self._cancel(sandbox_id, cut)
            raise
        return Sandbox._from_api(created, self._http)

    def _cancel(self, sandbox_id: str, cut: BaseException) -> None:
        """Undo a create cut short before its answer was read: remove the sandbox by the id this
        client chose, whether the server made it or not (the server removes one it was starting
        when it sees its caller gone; this covers one whose answer was sent as the caller went,
        read by nobody). Best effort, within CANCEL_TIMEOUT: what became of it is a note on
        `cut`, the exception that goes on."""
        path = f"/v1/sandboxes/{sandbox_id}"
        try:
            self._http.delete(path, timeout=self._http.waiting(CANCEL_TIMEOUT))
        except NotFound:
            cut.add_note(
                f"The create was cancelled; no sandbox was left (its id would have been {sandbox_id})."
            )
        except OrchError as e:
            cut.add_note(
                f"The create was cut short, and the sandbox it may have made ({sandbox_id}) could not "
                f"be removed: {e.message} If `orch sandbox list` shows it, remove it with "
                f"client.sandboxes.get({sandbox_id!r}).remove() (else it ends at its idle timeout)."
            )
        else:
            cut.add_note(f"The create was cancelled; the sandbox it was making ({sandbox_id}) was removed.")

    def get(self, sandbox_id: str) -> Sandbox:
        path = f"/v1/sandboxes/{segment(sandbox_id, LISTS, numbers=False)}"
        return Sandbox._from_api(self._http.get(path), self._http)

    def list(self, all: bool = False) -> list[Sandbox]:
        """The workspace's open sandboxes (`all`: removed ones too)."""
        params = {"all": "true"} if flag(all, "all") else {}
        return [
            Sandbox._from_api(s, self._http) for s in listed(self._http.get("/v1/sandboxes", params=params))
        ]
