"""The managed loop with its tools in a real sandbox held open on runc (sandbox/held.py), the
model the scripted server (tests/model_server.py) through the providers' SDKs: files and
commands happen inside the sandbox, as its user, never on the host. Nothing of the sandbox is
left afterwards. (The run worker does not drive loops yet: this is the loop and its sandbox.)"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orch.builder import base_images
from orch.bundle.loop_manifest import LoopConfig
from orch.engine.base import ContainerSpec
from orch.loop.driver import run_loop
from orch.loop.outcome import Outcome
from orch.loop.providers import connect
from orch.loop.retry import Backoff
from orch.loop.sandbox import HeldTools
from orch.models import RunStatus
from orch.sandbox.held import RuncHolder, RuncSandbox
from orch.sandbox.layout import SANDBOX_USER, SCRATCH, WORKDIR
from orch.sandbox.runc import Launcher
from tests.integration import test_runc_launcher as runc_tests
from tests.model_server import KEY, ModelServer, Reply, model_server_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


# The runc launcher test's own (module-scoped: one launcher for this module, swept after it).
launcher = runc_tests.launcher
PREFIX = runc_tests.PREFIX


@pytest.fixture
def held(launcher: Launcher) -> Iterator[RuncSandbox]:
    tmpfs = "rw,exec,nosuid,nodev,mode=1777,size=64m"
    spec = ContainerSpec(
        image=base_images.image_tag("python"),
        argv=[],
        name=f"{PREFIX}{uuid.uuid4().hex[:8]}",
        labels={},
        env={"HOME": WORKDIR},
        workdir=WORKDIR,
        user=SANDBOX_USER,
        tmpfs={WORKDIR: tmpfs, SCRATCH: tmpfs},
        memory_bytes=256 * MiB,
        pids=128,
        read_only=False,
    )
    sandbox = RuncHolder(launcher).open(spec)
    yield sandbox
    assert sandbox.remove() == ""
    launcher.wait()  # used namespaces are destroyed in the background
    assert runc_tests.leftovers(launcher) == {}


def drive(
    server: ModelServer, held: RuncSandbox, provider: str, **settings: Any
) -> tuple[Outcome, list[Any]]:
    url = server.openai_url if provider == "openai" else server.anthropic_url
    loop = LoopConfig(model="m", provider=provider, base_url=url, api_key_secret="MODEL_KEY", **settings)  # type: ignore[arg-type]
    events: list[Any] = []
    outcome = run_loop(
        loop,
        connect(loop, KEY),
        HeldTools(held),
        "work in the sandbox",
        lambda kind, data: events.append((kind, data)),
        backoff=Backoff(attempts=2, first=0.01),
    )
    return outcome, events


def results(events: list[Any]) -> list[tuple[int, str]]:
    return [(data["exit_code"], data["output"]) for kind, data in events if kind == "tool_result"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_tools_work_inside_the_sandbox(
    model_server: ModelServer, held: RuncSandbox, provider: str, tmp_path: Path
) -> None:
    os.chdir(tmp_path)  # a relative path the tools write must not land here
    model_server.script(
        Reply(
            calls=[
                ("write_file", {"path": "src/app.py", "content": "print('hello')\n"}),
                ("edit_file", {"path": "src/app.py", "old": "hello", "new": "from the loop"}),
                ("bash", {"command": "python3 src/app.py; id -u; pwd"}),
                ("read_file", {"path": "src/app.py"}),
                ("list_files", {"path": "src"}),
            ]
        ),
        Reply(text="The app prints its greeting."),
    )
    outcome, events = drive(model_server, held, provider)
    assert (outcome.status, outcome.answer) == (RunStatus.SUCCEEDED, "The app prints its greeting.")
    got = results(events)
    assert got[0] == (0, "wrote 15 bytes to src/app.py")
    assert got[1] == (0, "replaced 1 occurrence in src/app.py")
    assert got[2] == (0, f"from the loop\n1000\n{WORKDIR}\n")
    assert got[3] == (0, "print('from the loop')\n")
    assert (
        got[4][0] == 0 and " user user 23 " in got[4][1] and got[4][1].endswith(" app.py\n")
    )  # the sandbox user's (uid 1000, `user` in the base images)
    assert not (tmp_path / "src").exists()
    assert held.read_file(f"{WORKDIR}/src/app.py", 1024) == b"print('from the loop')\n"


def test_failures_in_the_sandbox_are_results(
    model_server: ModelServer, held: RuncSandbox, tmp_path: Path
) -> None:
    marker = tmp_path / "host-only.txt"
    marker.write_text("host secret")
    model_server.script(
        Reply(
            calls=[
                ("read_file", {"path": str(marker)}),
                ("write_file", {"path": "/etc/orch-test", "content": "x"}),
                ("bash", {"command": "echo start; sleep 30"}),
                ("bash", {"command": "head -c 100000 /dev/zero | tr '\\0' 'a'; echo; echo END"}),
            ]
        ),
        Reply(text="Some tools failed."),
    )
    began = time.monotonic()
    outcome, events = drive(model_server, held, "openai", tool_timeout=2, tool_output_limit="4Ki")
    assert outcome.status == RunStatus.SUCCEEDED and time.monotonic() - began < 20
    (read, write, slow, flood) = results(events)
    assert read[0] != 0 and "No such file" in read[1] and "host secret" not in read[1]
    assert write[0] != 0 and "Permission denied" in write[1]
    assert slow[0] == 124 and slow[1] == "start\n\n[timed out after 2 s]"
    assert flood[0] == 0 and flood[1].endswith("END\n") and "bytes cut" in flood[1] and len(flood[1]) < 4200
    # The timed-out command was killed (its processes' command lines hold no `sleep 30`).
    assert (
        held.exec(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -q '[s]leep 30'"]).exit_code
        == 1
    )
