"""`orch.Client` against a real `orch server` on real sandboxes: a run followed to its end, a
sandbox driven through exec and files, and the settings found as the CLI finds them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch import Client
from orch.client.plain_http import PlainHTTP
from orch.errors import NotFound
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAIN = """
import json, os, sys
data = json.loads(os.environ["ORCH_INPUT"])
print("hello", data["name"], os.environ.get("MODE", ""))
print("a note", file=sys.stderr)
sys.exit(data.get("code", 0))
"""


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """A client that finds the server by ORCH_HOME alone, as the CLI would."""
    for name in [k for k in os.environ if k.startswith("ORCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ORCH_HOME", str(server.home))
    with Client() as c:
        assert c.url == server.url and isinstance(c.http._backend, PlainHTTP)
        yield c


def test_a_real_run_through_the_client(server: Server, client: Client, tmp_path: Path) -> None:
    agent = tmp_path / "hello"
    agent.mkdir()
    (agent / "main.py").write_text(MAIN)
    assert server.cli("publish", str(agent)).returncode == 0
    run = client.runs.create("hello", input={"name": "Ada"}, env={"MODE": "test"}).wait(timeout=300)
    assert (run.status, run.exit_code) == ("succeeded", 0), run.log
    assert run.stdout == "hello Ada test\n" and run.stderr == "a note\n"
    assert run.isolation == "runc" and run.environment.name == "python" and run.duration
    failed = client.runs.create("hello", input={"name": "Bo", "code": 3}).wait(timeout=300)
    assert (failed.status, failed.exit_code, failed.stdout) == ("failed", 3, "hello Bo \n")
    assert [r.id for r in client.runs.list(agent="hello")] == [failed.id, run.id]


def test_a_real_sandbox_through_the_client(client: Client) -> None:
    with client.sandboxes.create(memory="256Mi", timeout=120) as box:
        assert box.status == "running" and box.memory_bytes == 256 * 2**20
        result = box.exec("echo $HOME; id -u; echo oops >&2; exit 3")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "/home/user\n1000\n", "oops\n")
        box.write_file("data/in.txt", "héllo\n")
        assert box.exec(["cat", "data/in.txt"]).stdout == "héllo\n"
        box.exec(["sh", "-c", "printf '\\000\\377' > out.bin"])
        assert box.read_file("/home/user/out.bin") == b"\x00\xff"
        with pytest.raises(NotFound):
            box.read_file("missing.txt")
        seen: list[tuple[float, str]] = []
        started = time.monotonic()
        streamed = box.exec(
            ["sh", "-c", "echo first; sleep 2; echo second"],
            on_stdout=lambda text: seen.append((time.monotonic() - started, text)),
        )
        assert streamed.exit_code == 0 and streamed.stdout == "first\nsecond\n"
        assert "".join(text for _, text in seen) == "first\nsecond\n"
        assert seen[0][0] < seen[-1][0] - 1  # the first line came before the command ended
        assert [b.id for b in client.sandboxes.list()] == [box.id]
    assert client.sandboxes.list() == [] and client.sandboxes.get(box.id).status == "removed"
