"""A loop whose tools' sandbox ends as a whole while a tool runs (its init killed, out of memory,
the runtime's crash): the loop ends there, the model called no more, the tool's end recorded;
a command the memory limit killed alone stays a result the model sees (docs/loop.md, "Limits").
The held sandbox is the fake one (sandbox/held_fake.py) under the real HeldTools."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from orch.engine.base import ContainerSpec
from orch.errors import EngineError
from orch.loop.clip import Clip
from orch.loop.sandbox import HeldTools, SandboxGone
from orch.models import RunStatus
from orch.sandbox.held import KILLED
from orch.sandbox.held_fake import Command, FakeSandbox
from tests.model_server import ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture
from tests.unit.test_loop_driver import PROVIDERS, Drive

NAME = "orch-b4b394c8bdeb-run_607ysghp7z"  # the runtime's name of the sandbox: never said
KILLED_UNDER = (
    "the tools' sandbox stopped: it ended while a tool ran, and everything in it was killed (its "
    "init process ended: killed, or out of memory)"
)
MEMORY = b"orch: killed: the sandbox's memory limit (512 MiB) was reached\n"  # as held.py says it


def held() -> FakeSandbox:
    return FakeSandbox(ContainerSpec(image="img", argv=["/run/orch-init", "-P"], name=NAME, labels={}))


def dies(sandbox: FakeSandbox, said: bytes = b"") -> Any:
    """A command that prints, then its sandbox ends under it (the kernel kills it: 137)."""

    def behaviour(cmd: Command) -> int:
        cmd.out(b"started\n")
        cmd.err(said)
        sandbox.die()
        cmd.sleep(30)  # cut at once: "killed"
        return 0

    return behaviour


def ended_at_once(drive: Drive, server: ModelServer, reason: str, code: int, output: str) -> None:
    outcome = drive()
    assert (outcome.status, outcome.answer, outcome.reason) == (RunStatus.FAILED, None, reason)
    assert len(server.requests) == 1  # the model is not called again
    assert drive.types() == ["model_call", "tool_call", "tool_result"]
    (call,), (result,) = drive.of("tool_call"), drive.of("tool_result")
    assert result["call_id"] == call["call_id"]
    assert (result["exit_code"], result["output"]) == (code, output)
    assert outcome.usage.model_calls == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_sandbox_that_dies_under_a_tool_ends_the_run_at_once(
    model_server: ModelServer, provider: str
) -> None:
    sandbox = held()
    sandbox.behaviour = dies(sandbox)
    drive = Drive(model_server, provider, HeldTools(sandbox))
    model_server.script(
        Reply(calls=[("bash", {"command": "echo started; sleep 30"}), ("bash", {"command": "ls"})]),
        Reply(text="All done."),
    )
    ended_at_once(drive, model_server, KILLED_UNDER, KILLED, "started\n\n[the sandbox stopped]")
    assert len(sandbox.commands) == 1  # the turn's next tool did not run


@pytest.mark.parametrize("tool", ["read_file", "write_file", "edit_file", "list_files"])
def test_every_tool_ends_the_run_when_its_sandbox_dies(model_server: ModelServer, tool: str) -> None:
    sandbox = held()
    sandbox.behaviour = dies(sandbox)
    drive = Drive(model_server, "openai", HeldTools(sandbox))
    arguments = {"path": "notes.md", "content": "x", "old": "a", "new": "b"}
    spec = {"read_file": ["path"], "write_file": ["path", "content"], "edit_file": ["path", "old", "new"]}
    wanted = {k: arguments[k] for k in spec.get(tool, ["path"])}
    model_server.script(Reply(calls=[(tool, wanted)]), Reply(text="All done."))
    ended_at_once(drive, model_server, KILLED_UNDER, KILLED, "started\n\n[the sandbox stopped]")


def test_a_sandbox_seen_ended_a_moment_after_the_commands_answer(model_server: ModelServer) -> None:
    """Under gVisor a command killed with its sandbox can answer (137) before the sandbox's
    process has exited."""
    sandbox = held()

    def killed_then_ended(cmd: Command) -> int:
        cmd.out(b"started\n")
        threading.Timer(0.3, sandbox.die).start()
        return KILLED

    sandbox.behaviour = killed_then_ended
    drive = Drive(model_server, "anthropic", HeldTools(sandbox))
    model_server.script(Reply(calls=[("bash", {"command": "kill -KILL 1"})]), Reply(text="All done."))
    ended_at_once(drive, model_server, KILLED_UNDER, KILLED, "started\n\n[the sandbox stopped]")


def test_a_sandbox_that_ended_at_its_memory_limit_says_so(model_server: ModelServer) -> None:
    sandbox = held()
    sandbox.behaviour = dies(sandbox, MEMORY)
    drive = Drive(model_server, "openai", HeldTools(sandbox))
    model_server.script(Reply(calls=[("bash", {"command": "python3 big.py"})]), Reply(text="All done."))
    reason = (
        "the tools' sandbox stopped: its memory limit (512 MiB) was reached while a tool ran, and "
        "everything in it was killed"
    )
    output = "started\n" + MEMORY.decode() + "\n[the sandbox stopped]"
    ended_at_once(drive, model_server, reason, KILLED, output)


def test_a_sandbox_gone_before_a_tool_starts_is_said_without_its_name(model_server: ModelServer) -> None:
    sandbox = held()
    sandbox.die()  # between two model calls, say: out of memory with a background process
    drive = Drive(model_server, "openai", HeldTools(sandbox))
    model_server.script(Reply(calls=[("bash", {"command": "ls"})]), Reply(text="All done."))
    reason = (
        "the tools' sandbox stopped: it was no longer running when a tool was to start (its init "
        "process ended: killed, or out of memory)"
    )
    ended_at_once(drive, model_server, reason, 126, "\n[the sandbox stopped]")
    assert NAME not in str(drive.events)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_command_the_memory_limit_killed_alone_is_the_models_to_see(
    model_server: ModelServer, provider: str
) -> None:
    sandbox = held()

    def killed_at_the_limit(cmd: Command) -> int:
        cmd.out(b"started\n")
        cmd.err(MEMORY)
        return KILLED  # the sandbox lives on

    sandbox.behaviour = killed_at_the_limit
    drive = Drive(model_server, provider, HeldTools(sandbox))
    model_server.script(Reply(calls=[("bash", {"command": "python3 big.py"})]), Reply(text="Too big."))
    outcome = drive()
    assert (outcome.status, outcome.answer) == (RunStatus.SUCCEEDED, "Too big.")
    assert drive.types() == ["model_call", "tool_call", "tool_result", "model_call", "final"]
    (result,) = drive.of("tool_result")
    assert (result["exit_code"], result["output"]) == (KILLED, "started\n" + MEMORY.decode())
    sent = json.dumps(model_server.requests[1].body)
    assert "orch: killed: the sandbox's memory limit (512 MiB) was reached" in sent
    assert "[exit code 137]" in sent


def test_a_cancel_that_ends_the_sandbox_stays_a_cancel(model_server: ModelServer) -> None:
    """The server's stop removes the tools' sandbox under the command it stops: that is the
    stop's end, not the sandbox's."""
    sandbox, stopped = held(), threading.Event()

    def stopped_with_its_sandbox(cmd: Command) -> int:
        stopped.set()
        sandbox.remove()
        return KILLED

    sandbox.behaviour = stopped_with_its_sandbox
    drive = Drive(model_server, "openai", HeldTools(sandbox, should_stop=stopped.is_set))
    model_server.script(Reply(calls=[("bash", {"command": "sleep 30"})]), Reply(text="All done."))
    outcome = drive(should_stop=stopped.is_set)
    assert (outcome.status, outcome.reason) == (RunStatus.CANCELLED, "cancelled while running")
    assert len(model_server.requests) == 1


@pytest.mark.parametrize(
    "said",
    [
        f"The sandbox {NAME} is no longer running.",
        f"The command could not start in the sandbox: container {NAME}: exec failed: EAGAIN.",
    ],
)
def test_a_tool_that_could_not_start_in_a_live_sandbox_names_no_container(said: str) -> None:
    """The launcher's or the runtime's words reach the run's reason: without the runtime's name
    of the sandbox (the platform's, not the user's)."""
    sandbox = held()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise EngineError(said, "")

    sandbox.exec = refuse  # type: ignore[method-assign]
    with pytest.raises(SandboxGone) as gone:
        HeldTools(sandbox).exec(["true"], stdin=None, timeout=5, output=Clip(1024))
    assert NAME not in str(gone.value) and "the sandbox" in str(gone.value).lower(), gone.value
