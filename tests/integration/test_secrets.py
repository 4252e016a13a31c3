"""Secrets end to end on a real server and a real runc sandbox: the agent gets its secret, prints
it (whole, and split across two writes with a flush and a pause between), and the value is found
nowhere the platform keeps anything: not in the stored output, the CLI's answers, the server's
log, any file under ORCH_HOME, the database file's bytes or any text column of the database."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from orch.secret import box
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VALUE = "sk-live-Q8z3-51HxKe0-integration"
AGENT = """\
import hashlib, os, sys, time
key = os.environ["OPENAI_API_KEY"]
print("sha256", hashlib.sha256(key.encode()).hexdigest(), flush=True)
print("whole:", key, flush=True)
sys.stdout.write("split: " + key[:9])
sys.stdout.flush()
time.sleep(0.5)
sys.stdout.write(key[9:] + " end\\n")
sys.stdout.flush()
sys.stderr.write("stderr: " + key + "\\n")
sys.stderr.flush()
sys.stdout.write("tail " + key[:4])
"""


def publish(server: Server, tmp_path: Path, name: str, code: str, manifest: str) -> None:
    root = tmp_path / name
    root.mkdir()
    (root / "main.py").write_text(code)
    (root / "orch.yaml").write_text(manifest)
    res = server.cli("publish", str(root), "--name", name)
    assert res.returncode == 0, res.stdout + res.stderr


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def text_columns_holding(db: Path, needle: str) -> list[str]:
    found = []
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column, kind in [(r[1], r[2]) for r in conn.execute(f"PRAGMA table_info('{table}')")]:
                rows = conn.execute(f'SELECT "{column}" FROM "{table}"').fetchall()
                found += [f"{table}.{column} ({kind})" for (v,) in rows if needle in str(v)]
    return found


def test_a_secret_reaches_the_sandbox_and_nothing_the_platform_keeps(server: Server, tmp_path: Path) -> None:
    res = server.cli("secret", "set", "OPENAI_API_KEY", input=VALUE + "\n")
    assert res.returncode == 0 and "Created secret OPENAI_API_KEY" in res.stdout, res.stdout + res.stderr
    publish(server, tmp_path, "keyed", AGENT, "secrets: [OPENAI_API_KEY]\n")

    res = server.cli("run", "keyed")  # streamed live, as a person sees it
    assert res.returncode == 0, res.stdout + res.stderr
    assert VALUE not in res.stdout + res.stderr
    assert "whole: ***\nsplit: *** end\n" in res.stdout and "stderr: ***" in res.stderr
    assert res.stdout.rstrip().endswith("tail " + VALUE[:4])  # held back, then shown at the end

    res = server.cli("run", "keyed", "--json")
    r = json.loads(res.stdout)
    assert r["status"] == "succeeded", r
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    assert r["stdout"] == f"sha256 {digest}\nwhole: ***\nsplit: *** end\ntail {VALUE[:4]}"
    assert r["stderr"] == "stderr: ***\n"
    shown = [
        server.cli("runs", "show", r["id"], "--json").stdout,
        server.cli("runs", "logs", r["id"]).stdout,
        server.cli("runs", "list", "--json").stdout,
        server.cli("secret", "list", "--json").stdout,
        json.dumps(server.get(f"/v1/runs/{r['id']}/logs")),
    ]
    assert not [s for s in shown if VALUE in s]
    assert [s["name"] for s in json.loads(shown[3])] == ["OPENAI_API_KEY"]

    server.stop()  # its log and the database's WAL are complete
    home = server.home
    assert (home / box.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert files_holding(home, VALUE.encode()) == []  # server.log, run logs, orch.db(-wal), config
    assert files_holding(home, VALUE[9:].encode()) == []  # nor the second half of a split write
    assert text_columns_holding(home / "orch.db", VALUE) == []
    assert text_columns_holding(home / "orch.db", "OPENAI_API_KEY") != []  # the name is there


def test_missing_and_unreadable_secrets_fail_runs_with_a_sentence(
    make_server: Callable[[], Server], tmp_path: Path
) -> None:
    server = make_server()
    server.start()
    publish(
        server, tmp_path, "needy", "import os\nprint(len(os.environ['GH_TOKEN']))\n", "secrets: [GH_TOKEN]\n"
    )
    res = server.cli("run", "needy")
    assert res.returncode == 1
    said = res.stdout + res.stderr
    assert "This agent needs the secret GH_TOKEN, which workspace default does not have." in said
    assert "orch secret set GH_TOKEN" in said and "Traceback" not in said

    assert server.cli("secret", "set", "GH_TOKEN", "--value", "ghp_abc123").returncode == 0
    r = json.loads(server.cli("run", "needy", "--json").stdout)
    assert (r["status"], r["stdout"]) == ("succeeded", "10\n")

    # Another key at the next start: the stored secret cannot be read, and the server says so.
    server.stop()
    server.settings["ORCH_SECRET_KEY"] = box.new_key_text()
    server.start()
    assert "1 of 1 stored secrets cannot be decrypted" in server.log.read_text()
    res = server.cli("run", "needy")
    said = res.stdout + res.stderr
    assert res.returncode == 1 and "GH_TOKEN cannot be decrypted with this server's secret key" in said
    assert "Traceback" not in said and "ghp_abc123" not in said

    # A setting that is not a key stops the server at start, with the fix.
    server.stop()
    server.settings["ORCH_SECRET_KEY"] = "hunter2"
    with pytest.raises(RuntimeError) as e:
        server.start(timeout=30)
    assert "is not a key" in str(e.value) and "openssl rand -base64 32" in str(e.value)
    assert "hunter2" not in server.log.read_text() and "Traceback" not in server.log.read_text()
