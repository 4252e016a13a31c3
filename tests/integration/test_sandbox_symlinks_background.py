"""Symlinks that lead nowhere, and the documented background server, end to end on real runc
(docs/sandboxes.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _create(server: Server) -> str:
    res = server.cli("sandbox", "create", "--json", "--memory", "256Mi")
    assert res.returncode == 0, res.stdout + res.stderr
    return str(json.loads(res.stdout)["id"])


def _run(server: Server, sandbox_id: str, script: str) -> dict:
    with server.api() as api:
        resp = api.post(
            f"/v1/sandboxes/{sandbox_id}/exec", json={"command": ["sh", "-c", script]}, timeout=60
        )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_symlinks_that_lead_nowhere_are_said_as_what_they_are(server: Server) -> None:
    """F1: a write through a symlink whose target's directory does not exist was said as a file
    system that makes no files (/proc's sentence); a read of a symlink loop as no file."""
    sb = _create(server)
    _run(server, sb, "ln -s /home/user/nodir/f ldang; ln -s lloop lloop; ln -s /tmp/gone lgone")
    with server.api() as api:
        put = api.put(f"/v1/sandboxes/{sb}/files", params={"path": "ldang"}, content=b"x")
        get = api.get(f"/v1/sandboxes/{sb}/files", params={"path": "lloop"})
        gone = api.get(f"/v1/sandboxes/{sb}/files", params={"path": "lgone"})
    assert put.status_code == 400
    assert put.json()["message"] == (
        "Could not write /home/user/ldang in the sandbox: it is a symlink to /home/user/nodir/f, "
        "whose directory does not exist."
    )
    assert "none can be made" not in put.text
    assert _run(server, sb, "readlink ldang")["stdout"] == "/home/user/nodir/f\n"  # left as it was
    assert get.status_code == 400
    assert get.json()["message"] == (
        "Could not read /home/user/lloop in the sandbox: Too many levels of symbolic links."
    )
    assert "leads back to itself" in get.json()["fix"]
    assert gone.status_code == 404
    assert gone.json()["message"] == (
        "No file /home/user/lgone in the sandbox: it is a symlink to /tmp/gone, which does not exist."
    )


def test_the_documented_background_server_keeps_running(server: Server) -> None:
    """F6: docs/sandboxes.md's `sh -c 'python3 -m http.server &'` died of BrokenPipeError at its
    first log line, the command's pipes closed once it ended. The example the docs give now (its
    output redirected) answers after the command that started it ended."""
    text = (Path(__file__).parents[2] / "docs" / "sandboxes.md").read_text()
    found = re.search(r"`sh -c '(python3 -m http\.server[^']*&)'`", text)
    assert found, "the docs give no background server"
    sb = _create(server)
    assert _run(server, sb, found[1])["exit_code"] == 0
    port = (re.findall(r"http\.server (\d+)", found[1]) or ["8000"])[0]
    probe = (
        "import time, urllib.request\n"
        "for _ in range(50):\n"
        "    try:\n"
        f"        print(urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=5).status); break\n"
        "    except OSError:\n"
        "        time.sleep(0.2)\n"
    )
    with server.api() as api:
        resp = api.post(f"/v1/sandboxes/{sb}/exec", json={"command": ["python3", "-c", probe]}, timeout=60)
    assert resp.json()["stdout"] == "200\n", resp.text
