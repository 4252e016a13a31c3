"""On this machine, with a PATH that lacks /usr/bin (where Podman is installed): `orch admin check`
and `orch server` say so in one sentence with the folder to add, and `--json` prints JSON."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import ORCH

pytestmark = pytest.mark.integration

SENTENCE = "podman is installed at /usr/bin/podman, but PATH does not include /usr/bin."


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    # Only the virtualenv's folder: what a service manager or a bare shell may give.
    return {**env, "PATH": str(Path(ORCH).parent), "ORCH_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "300"}


def test_admin_check_names_the_folder_path_lacks(tmp_path: Path) -> None:
    assert Path("/usr/bin/podman").exists()
    env = _env(tmp_path / "home")
    done = subprocess.run(
        [ORCH, "admin", "check", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr
    problem = json.loads(done.stdout)["problem"]
    assert problem["message"] == SENTENCE and "Add /usr/bin to the PATH" in problem["fix"]

    done = subprocess.run([ORCH, "admin", "check"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert SENTENCE in done.stdout + done.stderr and "bug" not in done.stdout + done.stderr


def test_a_server_start_names_the_folder_path_lacks(tmp_path: Path) -> None:
    done = subprocess.run(
        [ORCH, "server", "--port", "18936", "--services-port", "18937"],
        env=_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert SENTENCE in done.stdout + done.stderr and "not installed" not in done.stdout + done.stderr
