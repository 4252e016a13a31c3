"""Every list command's table on an 80-column terminal: ids, names, statuses, versions and counts
whole (what the next command takes), each row on one line, the descriptive columns cut with …;
and when even those don't fit, rows wider than the terminal rather than a cut id (docs/cli.md)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.testing import CliRunner

from orch.cli import output
from orch.cli.main import app
from orch.client.transport import Transport

ANSI = re.compile(r"\x1b\[[0-9;]*m")
T = "2026-12-07T01:12:33.123456+00:00"


def _env(id_: str, name: str, kind: str, status: str, description: str, default: bool = False) -> dict:
    return {
        "id": id_,
        "name": name,
        "kind": kind,
        "status": status,
        "default": default,
        "description": description,
        "image": "x",
    }


def _run(id_: str, agent: str, version: int, status: str, env: str, exit_code: int | None) -> dict:
    return {
        "id": id_,
        "agent": agent,
        "agent_version": version,
        "status": status,
        "environment": {"name": env},
        "environment_rule": "workspace-default",
        "exit_code": exit_code,
        "queued_at": T,
    }


def _service(name: str, state: str, version: int) -> dict:
    return {
        "name": name,
        "state": state,
        "version": version,
        "replicas": [{"state": "running"}],
        "desired_replicas": 1,
        "uptime": 3720.0,
        "restarts": 12,
        "public": False,
        "url": f"http://localhost:18841/services/default/{name}",
    }


def _agent(name: str, version: int, entrypoint: str) -> dict:
    return {
        "name": name,
        "latest": {
            "version": version,
            "manifest": {},
            "entrypoint": entrypoint,
            "language": "python",
            "dockerfile_environment": None,
            "pinned_environment": "scraper-plus-with-browsers",
            "created_at": T,
        },
    }


def _sandbox(id_: str, status: str) -> dict:
    return {
        "id": id_,
        "status": status,
        "environment": {"name": "python-data-science"},
        "memory_bytes": 2**31,
        "created_at": T,
        "last_used_at": T,
        "expires_at": T,
        "node": None,
        "reason": None,
    }


def _node(id_: str, address: str) -> dict:
    return {
        "id": id_,
        "address": address,
        "state": "up",
        "capacity": {"cpus": 16, "memory": 64 * 2**30, "slots": 32},
        "running": 12,
        "seen_at": T,
    }


ANSWERS: dict[str, Any] = {
    "/v1/environments": [
        _env("env_k3m9q2x7ab", "python-data-science", "predefined", "ready", "Python 3.12 " * 8, True),
        _env("env_p0o9i8u7yt", "scraper-plus", "custom", "building", "Playwright, Chromium " * 5),
        _env("env_zz11yy22xx", "node", "base", "not-built", ""),
    ],
    "/v1/runs": [
        _run("run_pegsgzqwer", "xss-agent", 12, "succeeded", "scraper-plus", 0),
        _run("run_abcdefghij", "summariser", 3, "cancelled", "python-data-science", 130),
        _run("run_klmnopqrst", "a", 1, "queued", "", None),
    ],
    "/v1/services": [_service("hello-world", "running", 3), _service("api-gateway", "crashloop", 12)],
    "/v1/agents": [
        _agent("xss-agent", 12, "src/agents/xss/main.py"),
        _agent("summariser-for-long-documents", 3, "main.py"),
    ],
    "/v1/sandboxes": [_sandbox("sbx_q1w2e3r4t5", "running"), _sandbox("sbx_y6u7i8o9p0", "paused")],
    "/v1/secrets": [
        {"name": "OPENAI_API_KEY_FOR_THE_SUMMARISER", "created_at": T, "updated_at": T},
        {"name": "GITHUB_TOKEN", "created_at": T, "updated_at": T},
    ],
    "/v1/workspaces": [
        {"id": "ws_a1b2c3d4e5", "name": "default", "created_at": T},
        {"id": "ws_f6g7h8i9j0", "name": "research-team-europe", "created_at": T},
    ],
    "/v1/tokens": [
        {"id": "tok_a1b2c3d4e5", "name": "ci-deploys", "workspace": "research-team-europe", "admin": True}
        | {"created_at": T},
        {"id": "tok_f6g7h8i9j0", "name": "laptop", "workspace": "default", "admin": False, "created_at": T},
    ],
    "/v1/nodes": [_node("gpu-box-frankfurt-01", "10.20.30.40"), _node("cpu-7", "10.20.30.41")],
}

# Each command, its headers, and for each row of its answer the cells that must show whole.
TABLES: list[tuple[list[str], list[str], list[list[str]]]] = [
    (
        ["env", "list"],
        ["ID", "NAME", "KIND", "STATUS", "DESCRIPTION"],
        [
            ["env_k3m9q2x7ab", "python-data-science ★", "predefined", "ready"],
            ["env_p0o9i8u7yt", "scraper-plus", "custom", "building"],
            ["env_zz11yy22xx", "node", "base", "not-built"],
        ],
    ),
    (
        ["runs", "list"],
        ["ID", "AGENT", "STATUS", "ENVIRONMENT", "EXIT", "QUEUED"],
        [
            ["run_pegsgzqwer", "xss-agent v12", "succeeded", "0"],
            ["run_abcdefghij", "summariser v3", "cancelled", "130"],
            ["run_klmnopqrst", "a v1", "queued"],
        ],
    ),
    (
        ["service", "list"],
        ["NAME", "STATE", "VERSION", "REPLICAS", "UPTIME", "RESTARTS", "ACCESS", "URL"],
        [
            ["hello-world", "running", "v3", "1/1", "1h02m", "12", "private"],
            ["api-gateway", "crashloop", "v12", "1/1", "1h02m", "12", "private"],
        ],
    ),
    (
        ["agents", "list"],
        ["NAME", "VERSION", "ENTRYPOINT", "ENVIRONMENT", "PUBLISHED"],
        [["xss-agent", "v12"], ["summariser-for-long-documents", "v3"]],
    ),
    (
        ["sandbox", "list"],
        ["ID", "STATUS", "ENVIRONMENT", "MEMORY", "CREATED", "LAST USED", "EXPIRES"],
        [["sbx_q1w2e3r4t5", "running", "2048 MiB"], ["sbx_y6u7i8o9p0", "paused", "2048 MiB"]],
    ),
    (
        ["secret", "list"],
        ["NAME", "CREATED", "UPDATED"],
        [["OPENAI_API_KEY_FOR_THE_SUMMARISER"], ["GITHUB_TOKEN"]],
    ),
    (
        ["workspace", "list"],
        ["ID", "NAME", "CREATED"],
        [["ws_a1b2c3d4e5", "default"], ["ws_f6g7h8i9j0", "research-team-europe"]],
    ),
    (
        ["token", "list"],
        ["ID", "NAME", "WORKSPACE", "ADMIN", "CREATED"],
        [
            ["tok_a1b2c3d4e5", "ci-deploys", "research-team-europe", "yes"],
            ["tok_f6g7h8i9j0", "laptop", "default"],
        ],
    ),
    (
        ["node", "list"],
        ["ID", "ADDRESS", "STATE", "CPUS", "MEMORY", "SLOTS", "RUNNING", "SEEN"],
        [
            ["gpu-box-frankfurt-01", "10.20.30.40", "up", "16", "64.0 GiB", "32", "12"],
            ["cpu-7", "10.20.30.41", "up", "16", "64.0 GiB", "32", "12"],
        ],
    ),
]


class _Answer:
    def __init__(self, data: Any) -> None:
        self.data, self.headers = data, {"orch-work": "cluster"}

    def json(self) -> Any:
        return self.data


class _Server:
    """What the list commands ask the server, answered from ANSWERS."""

    def get(self, path: str, params: Any = None) -> Any:
        return ANSWERS[path]

    def send(self, method: str, path: str, **_: Any) -> _Answer:
        return _Answer(ANSWERS[path])


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch):
    """The CLI on a terminal `columns` wide: its output, without colours, as lines."""
    monkeypatch.setattr(Transport, "from_settings", staticmethod(lambda home=None: _Server()))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # a terminal, for orch's console and rich's
    monkeypatch.delenv("FORCE_COLOR", raising=False)

    def run(args: list[str], columns: int = 80) -> list[str]:
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.setattr(output.console, "_rich", None)  # rich reads COLUMNS when it is made
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return ANSI.sub("", result.output).splitlines()

    return run


@pytest.mark.parametrize(("args", "headers", "rows"), TABLES, ids=[" ".join(t[0]) for t in TABLES])
def test_key_columns_whole_at_80_columns(terminal, args: list[str], headers: list[str], rows) -> None:
    lines = terminal(args)
    assert len(lines) == 1 + len(rows), lines  # a line each: nothing wrapped
    assert lines[0].split() == " ".join(headers).split(), lines[0]  # no column dropped or cut
    for line, keys in zip(lines[1:], rows, strict=True):
        assert len(line) <= 80, line  # ★ takes one column
        cells = re.split(r"\s{2,}", line)
        for key in keys:
            assert key in cells, (key, line)  # whole, a cell of its own


def test_runs_cut_the_environment_and_keep_the_run_id(terminal) -> None:
    lines = terminal(["runs", "list"])
    assert lines[1].startswith("run_pegsgzqwer  xss-agent v12  succeeded  scraper-plus (…")
    assert "…" in lines[1] and len(lines[1]) == 80


def test_wide_terminal_cuts_nothing(terminal) -> None:
    for args, _, _ in TABLES:
        lines = terminal(args, columns=250)
        assert "…" not in "\n".join(lines), args


def test_key_columns_wider_than_the_terminal_are_not_cut(terminal) -> None:
    """Rather a row the terminal wraps than an id cut: the key cells go out whole."""
    lines = terminal(["node", "list"], columns=40)
    assert len(lines) == 3 and len(lines[1]) > 40
    cells = re.split(r"\s{2,}", lines[1])
    assert cells == ["gpu-box-frankfurt-01", "10.20.30.40", "up", "16", "64.0 GiB", "32", "12", "202…"], lines


def test_descriptive_columns_give_way_evenly() -> None:
    """Key columns keep their width; the descriptive ones share what is left, the widest cut
    first, none narrower than its header; the columns' gaps count."""
    table = output.Table()
    table.add_column("ID")
    table.add_column("WHAT", key=False)
    table.add_column("WHEN", key=False)
    table.add_row("id_" + "x" * 20, "w" * 50, "2026-12-07T01:12:33")
    assert table.widths(80) == [23, 80 - 23 - 4 - 19, 19]
    assert table.widths(60) == [23, 17, 16]  # 33 left: 16 each, the odd one to the wider
    assert table.widths(30) == [23, 4, 4]  # no room: headers whole, the table wider than 30
    assert table.widths(200) == [23, 50, 19]
    keys = output.Table()
    keys.add_column("ID")
    keys.add_column("NAME")
    keys.add_row("id_" + "x" * 20, "n" * 30)
    assert keys.widths(40) == [23, 30]  # nothing gives way: wider than 40
