"""Build logs on real Podman: a failure's decisive line far from the end reaches the user, and the
log numbers steps as the user's Dockerfile does."""

from __future__ import annotations

import json

import pytest

from orch.builder import base_images
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DECISIVE = "fatal: could not resolve host: github.com"
# The line that says why, then 30 lines of noise, as pip prints after git's error (no network).
FAILING = f"""\
FROM e2bdev/code-interpreter:latest
RUN echo '{DECISIVE}' && for i in $(seq 1 30); do echo "noise $i"; done && exit 1
"""


def test_a_failure_far_from_the_end_is_shown_and_logged(server: Server, tmp_path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(FAILING)
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "broken")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Build failed: Step 2/2" in res.stderr
    assert DECISIVE in res.stderr and "noise 30" in res.stderr  # the excerpt: why, and the end
    assert "whole log: orch env logs broken" in res.stderr

    logs = server.cli("env", "logs", "broken")
    assert logs.returncode == 0, logs.stderr
    assert DECISIVE in logs.stdout and "noise 15" in logs.stdout
    assert "STEP 1/2: FROM localhost/orch/code-interpreter:" in logs.stdout
    assert "STEP 2/2: RUN echo" in logs.stdout and "STEP 2/6" not in logs.stdout
    status = json.loads(server.cli("env", "status", "broken", "--json").stdout)
    assert DECISIVE in status["log_excerpt"]
    assert status["base_image"] == base_images.image_tag("code-interpreter")


def test_orchs_label_steps_are_marked_in_the_log(server: Server, tmp_path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM e2bdev/code-interpreter:latest\nENV MADE_BY=test\nCMD python\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "labelled")
    assert res.returncode == 0, res.stdout + res.stderr
    log = server.cli("env", "logs", "labelled").stdout
    assert "STEP 2/3: ENV MADE_BY=test" in log
    assert 'STEP (orch): LABEL "org.orch.kind"="environment"' in log
    assert 'LABEL "org.orch.home"' in log and str(server.home) not in log  # a path on the server's machine
    assert "STEP 3/" not in log and "STEP 4/" not in log  # Podman's numbers for the labels are gone
    res = server.cli("env", "status", "labelled")
    assert f"base     {base_images.image_tag('code-interpreter')}" in res.stdout
