"""`orch env validate` reads a file and stdin alike: the same bytes, the same verdict (issue 10, 5-7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest
from typer.testing import CliRunner

from orch.cli.main import app
from orch.dockerfile import render_containerfile, validate

BASE = b"FROM e2bdev/code-interpreter:latest\n"
NOT_UTF8 = BASE + b"RUN echo \xff\n"
LONE_CR = BASE + b"RUN echo a\rEXPOSE 80\n"


def from_file(tmp_path: Path, data: bytes) -> tuple[int, str]:
    path = tmp_path / "Dockerfile"
    path.write_bytes(data)
    result = CliRunner().invoke(app, ["env", "validate", "-f", str(path), "--json"])
    return result.exit_code, result.stdout


def from_stdin(data: bytes) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["env", "validate", "-f", "-", "--json"], input=data)
    return result.exit_code, result.stdout


def test_bytes_that_are_not_utf8_on_stdin_are_a_finding() -> None:
    """`printf '...\\xff...' | PYTHONIOENCODING=utf-8 orch env validate -f - --json` crashed."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from orch.cli.main import main; main()",
            "env",
            "validate",
            "-f",
            "-",
            "--json",
        ],
        input=NOT_UTF8,
        capture_output=True,
        env=env,
        check=False,
    )
    assert out.returncode == 2, out.stderr.decode()[-500:]
    [finding] = json.loads(out.stdout)["findings"]
    assert finding["line"] == 2 and "UTF-8" in finding["message"]


def test_a_file_that_is_not_utf8_prints_json_too(tmp_path: Path) -> None:
    code, stdout = from_file(tmp_path, NOT_UTF8)
    [finding] = json.loads(stdout)["findings"]  # JSON on stdout, not a message on stderr
    assert code == 2 and finding["line"] == 2 and "UTF-8" in finding["message"]


@pytest.mark.parametrize(
    "data",
    [LONE_CR, BASE + b"RUN echo a\r\nEXPOSE 80\r\n", b"\xef\xbb\xbf" + BASE + b"RUN true\n", NOT_UTF8],
    ids=["lone CR", "CRLF", "BOM", "not UTF-8"],
)
def test_a_file_and_stdin_give_one_verdict(tmp_path: Path, data: bytes) -> None:
    assert from_file(tmp_path, data) == from_stdin(data)


def test_a_lone_cr_is_no_line_break_as_to_buildkit(tmp_path: Path) -> None:
    # BuildKit's scanner splits lines at LF only (and trims CRs at a line's end).
    [_, run] = dockerfile.parse_string(LONE_CR.decode())
    assert run.value == ("echo a\rEXPOSE 80",)
    code, stdout = from_file(tmp_path, LONE_CR)
    assert (code, json.loads(stdout)) == (0, {"ok": True, "findings": []})
    v = validate(LONE_CR.decode())
    # Rendered for Podman, the CR stays inside the command (exec form escapes it).
    assert render_containerfile(v.instructions, "base").splitlines()[1] == (
        'RUN ["/bin/sh", "-c", "echo a\\rEXPOSE 80"]'
    )
