"""A machine whose ORCH_SECRET_KEY is not the cluster's, against a real Ray head that requires
the cluster's token (started as scripts/cluster-up starts its head, on 127.0.0.1): `orch node
stop` and a node's join are refused by the head's first answer, one sentence naming the key,
exit 2, with none of Ray's C++ warnings (a tester's stop took 24 s, printed ~20 of them and
said "orch failed unexpectedly (ConnectionError ...)"; a start quoted Ray's first INFO line
with its colour codes)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.cluster import ray_node
from orch.errors import InvalidInput

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORCH = str(Path(sys.executable).with_name("orch"))
KEY = "the-cluster-s-key"
WRONG = "not-the-cluster-s-key"
REFUSED = "the cluster refused its token, so ORCH_SECRET_KEY here is not the cluster's key."


def _session(sid: int) -> list[int]:
    """The live processes of session `sid` (the head's, and every Ray process it started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_bytes().rsplit(b")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != b"Z":  # a zombie is gone already
                found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    pytest.importorskip("ray")
    where = Path(f"/tmp/wk-{uuid.uuid4().hex[:8]}")  # short: Ray's socket paths are bounded
    where.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "orch.cluster.ray_start", "start", "--head", "--block"]
    command += ["--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={where}/ray"]
    command += ["--include-dashboard=false", "--num-cpus=0", "--disable-usage-stats"]
    log = (where / "head.log").open("wb")
    env = {**os.environ, "ORCH_SECRET_KEY": KEY, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        for _ in range(240):  # until the head says it started (~10 s)
            said = (where / "head.log").read_text(errors="replace")
            if "Ray runtime started" in said:
                break
            assert proc.poll() is None, said[-3000:]
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
        else:
            pytest.fail(f"the Ray head did not start: {said[-3000:]}")
        yield f"127.0.0.1:{port}"
    finally:
        for _ in range(50):  # a test head: every process of its session killed, none left
            left = _session(proc.pid)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        proc.wait(timeout=10)  # killed: reaped at once
        log.close()
        subprocess.run(["rm", "-rf", str(where)], check=False)


def _stop(head: str, key: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "RAY_"))}
    env.update(ORCH_HOME=str(home), ORCH_SECRET_KEY=key, NO_COLOR="1", COLUMNS="200")
    return subprocess.run(
        [ORCH, "node", "stop", "a", "--cluster", head], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_stop_with_another_key_is_one_sentence_naming_the_key(head: str, tmp_path: Path) -> None:
    done = _stop(head, WRONG, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert f"This machine could not reach the Ray cluster at {head}: {REFUSED}" in said
    assert "Set ORCH_SECRET_KEY to the key the cluster's server and nodes use" in said
    assert "gcs_client" not in said and "InvalidAuthToken" not in said and "\x1b" not in said
    assert len(said.strip().splitlines()) == 2, said
    # The cluster's own key gets through to Ray, which has no node `a`.
    right = _stop(head, KEY, tmp_path)
    assert right.returncode == 2 and f"No node named a runs in the Ray cluster at {head}." in right.stderr


def test_a_join_with_another_key_is_refused_before_ray_start(
    head: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head's own answer to the token: `ray start` (~25 s before Ray gives up) never runs."""

    def ray_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("`ray start` ran with a token the head refuses")

    monkeypatch.setattr(subprocess, "run", ray_start)
    with pytest.raises(InvalidInput) as caught:
        ray_node.join(head, "127.0.0.1", "x", 1, WRONG)
    assert caught.value.message == f"This machine could not join the Ray cluster at {head}: {REFUSED}"
    ray_node.check_token(head, KEY, "could not join")  # the cluster's key: taken
