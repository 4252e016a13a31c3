"""Environments end to end: the CLI talks to a real `orch server`, which builds on real Podman."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from orch.engine import PodmanEngine
from tests.integration.conftest import Server
from tests.integration.test_build_server_stop import building
from tests.integration.test_engine import running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A small pure-Python package from PyPI: the build must reach the registry through the host's
# proxy and CA bundle. The heredoc checks that what validates also builds (Podman 4.3 has none).
CUSTOM = """\
# syntax=docker/dockerfile:1
from e2bdev/code-interpreter:latest
RUN pip install --no-cache-dir \\
      six==1.16.0
RUN uv pip install --system --no-cache tomli==2.0.1
RUN npm install --global --no-fund --no-audit is-number@7.0.0
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends jq >/dev/null
ENV GREETING="hello world" \\
    MODE=test
RUN <<EOF
set -e
mkdir -p /opt/orch-test
echo "from heredoc" > /opt/orch-test/marker
EOF
CMD ["python3"]
"""


def wait_final(server: Server, ref: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    with server.api() as api:
        while time.monotonic() < deadline:
            data = api.get(f"/v1/environments/{ref}").json()
            if data["status"] in ("ready", "failed"):
                return data
            time.sleep(0.5)
    raise AssertionError(f"{ref} did not finish in {timeout} s")


def test_create_build_run_and_cache_hit(server: Server, tmp_path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(CUSTOM)
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "sixer")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Dockerfile valid (2 warnings)" in res.stdout
    assert "Ready in" in res.stdout and "cache miss (new Dockerfile)" in res.stdout

    status = json.loads(server.cli("env", "status", "sixer", "--json").stdout)
    assert status["status"] == "ready" and status["cache"] == "miss"
    assert set(status) >= {
        "id",
        "name",
        "kind",
        "status",
        "cache",
        "cache_reason",
        "build_id",
        "error",
    }
    image = status["image"]

    # The image works: the package imports, the ENV is set, the heredoc ran.
    code = (
        "import os, six, tomli, shutil; print(six.__version__, os.environ['GREETING'], "
        "os.environ['MODE'], open('/opt/orch-test/marker').read().strip(), bool(shutil.which('jq')), "
        "os.path.isdir('/usr/local/lib/node_modules/is-number'))"
    )
    probe = PodmanEngine().run(image, ["python3", "-c", code], labels={"org.orch.instance": server.instance})
    assert probe.exit_code == 0, probe.stderr
    # pip, uv, npm and apt all reached their registries through the host's proxy and CA bundle.
    assert probe.stdout.strip() == "1.16.0 hello world test from heredoc True True"

    # The same Dockerfile again: ready at once, no build, the same image.
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "sixer-copy", "--json")
    assert res.returncode == 0, res.stderr
    copy = json.loads(res.stdout)
    assert copy["status"] == "ready" and copy["cache"] == "hit"
    assert "sixer" in copy["cache_reason"] and status["id"] in copy["cache_reason"]
    assert copy["image"] == image
    log = server.get(f"/v1/environments/{copy['id']}/logs")
    assert log["text"] == ""  # no build ran

    # Appending a step rebuilds only that step: Podman's layer cache serves the others.
    dockerfile.write_text(CUSTOM + "RUN echo appended > /appended\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "sixer-plus", "--json")
    plus = json.loads(res.stdout)
    assert plus["status"] == "ready" and plus["cache"] == "miss", res.stderr
    log = server.get(f"/v1/environments/{plus['id']}/logs")["text"]
    # A build that met Podman's cache-lookup race (another test removing an image meanwhile) is
    # tried again and its log holds every attempt: the last attempt is the one that built.
    last = log.rsplit("layer cache changed under the build; trying again", 1)[-1]
    runs = [chunk for chunk in last.split("STEP ")[1:] if chunk.split(": ", 1)[1].startswith("RUN")]
    assert "RUN echo appended" in runs[-1] and "Using cache" not in runs[-1], log
    assert len(runs) == 6 and all("Using cache" in chunk for chunk in runs[:-1]), log

    listed = json.loads(server.cli("env", "list", "--json").stdout)
    names = {e["name"]: e for e in listed}
    assert names["sixer"]["kind"] == "custom" and names["python-ml"]["kind"] == "predefined"
    assert names["python"]["status"] == "ready"


def test_failed_run_step_names_step_and_output(server: Server, tmp_path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM e2bdev/code-interpreter:latest\nRUN echo preparing\nRUN echo 'no such thing' >&2 && exit 3\n"
    )
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "broken")
    assert res.returncode == 1
    assert "Build failed: Step 3/3" in res.stderr and "exit code 3" in res.stderr
    assert "no such thing" in res.stderr
    status = json.loads(server.cli("env", "status", "broken", "--json").stdout)
    assert status["status"] == "failed"
    assert status["failed_step"].startswith("step 3/3")


def test_bad_input_changes_nothing(server: Server, tmp_path) -> None:
    before = server.cli("env", "list", "--json").stdout
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM e2bdev/code-interpreter:latest\nCOPY app.py /app/\n")
    res = server.cli("env", "create", "-f", str(bad), "-n", "bad")
    assert res.returncode == 2 and "line 2" in res.stdout and "COPY" in res.stdout
    empty = tmp_path / "empty"
    empty.write_text("")
    assert server.cli("env", "create", "-f", str(empty), "-n", "empty").returncode == 2
    res = server.cli("env", "status", "env_doesnotexist")
    assert res.returncode == 2 and "No environment" in res.stderr and "Traceback" not in res.stderr
    res = server.cli("env", "delete", "python-ml", "--yes")
    assert res.returncode == 2 and "can't be deleted" in res.stderr
    res = server.cli("env", "create", "-f", str(tmp_path / "missing"), "-n", "x")
    assert res.returncode == 2 and "There is no file" in res.stderr
    assert server.cli("env", "list", "--json").stdout == before


def test_server_killed_during_build_is_not_stuck(make_server, tmp_path) -> None:
    server: Server = make_server()
    server.start()
    dockerfile = tmp_path / "Dockerfile"
    # The step sleeps about 8 s (the digits after the point make its command line this test's
    # own): the killed server's build is still in it as the next start ends it, and the build
    # run again after the start waits that long, not 20 s.
    marker = f"8.{7_450_000 + os.getpid()}"
    dockerfile.write_text(f"FROM e2bdev/code-interpreter:latest\nRUN sleep {marker} && echo slept > /slept\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "slow", "--detach", "--json")
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 120
    with server.api() as api:
        while api.get("/v1/environments/slow").json()["status"] != "building":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    while not running(f"sleep {marker}"):  # podman build is in its RUN step now
        assert time.monotonic() < deadline, "the build never reached its RUN step"
        time.sleep(0.2)
    server.kill()
    server.start()
    res = server.cli("env", "status", "slow", "--follow")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "STEP 2/" in res.stdout and "status   ready" in res.stdout
    data = wait_final(server, "slow")
    assert data["status"] == "ready", data
    assert data["build"]["attempts"] == 2
    log = server.get("/v1/environments/slow/logs")["text"]
    assert "The server stopped during this build; it was queued again." in log


def test_two_platforms_side_by_side(make_server, tmp_path) -> None:
    a: Server = make_server("a")
    b: Server = make_server("b")
    a.start()
    b.start()
    assert a.url != b.url and a.token != b.token
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM e2bdev/code-interpreter:latest\nENV SIDE=by-side\n")
    for s in (a, b):
        res = s.cli("env", "create", "-f", str(dockerfile), "-n", "same")
        assert res.returncode == 0, res.stdout + res.stderr
    img_a = json.loads(a.cli("env", "status", "same", "--json").stdout)["image"]
    img_b = json.loads(b.cli("env", "status", "same", "--json").stdout)["image"]
    assert img_a != img_b
    # Deleting in one platform leaves the other's image and environment alone.
    assert a.cli("env", "delete", "same", "--yes").returncode == 0
    engine = PodmanEngine()
    assert engine.inspect_image(img_a) is None
    assert engine.inspect_image(img_b) is not None
    assert json.loads(b.cli("env", "status", "same", "--json").stdout)["status"] == "ready"


def test_build_timeout_fails_the_build(make_server, tmp_path) -> None:
    server: Server = make_server()
    (server.home).mkdir(parents=True)
    (server.home / "config.toml").write_text("build_timeout = 5\n")
    server.start()
    dockerfile = tmp_path / "Dockerfile"
    marker = str(7_200_000 + os.getpid())
    dockerfile.write_text(f"FROM e2bdev/code-interpreter:latest\nRUN sleep {marker}\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "sleepy", "--json")
    assert res.returncode == 1
    data = json.loads(res.stdout)
    assert data["status"] == "failed"
    # Not a step that failed: the step that ran too long is named, with the timeout's own fix.
    assert data["error"] == (
        f"The build was stopped after 5 s, during step 2/2: RUN sleep {marker}. "
        "Make the Dockerfile's steps faster, or raise ORCH_BUILD_TIMEOUT."
    )
    assert data["failed_step"] is None
    # Everything the build started is gone: its RUN step's processes went on before.
    assert not running(f"sleep {marker}")
    assert PodmanEngine().remove_build_leftovers(server.instance) == 0  # no working container left
    res = server.cli("env", "status", "sleepy")
    assert "Fix the step" not in res.stderr and "Whole log: orch env logs sleepy" in res.stderr


def test_deleting_an_environment_stops_its_build(server: Server, tmp_path) -> None:
    """A delete during the build left `podman build` running (up to ORCH_BUILD_TIMEOUT) with the
    only build worker held: every other build waited queued behind it."""
    marker = str(7_300_000 + os.getpid())
    dockerfile = tmp_path / "Dockerfile"
    building(server, dockerfile, "hang", marker)
    res = server.cli("env", "delete", "hang", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.monotonic() + 20
    while running(f"sleep {marker}") or running(f"ORCH_BUILD_OWNER={server.instance}/"):
        assert time.monotonic() < deadline, running(marker)
        time.sleep(0.2)
    # The build worker is free (there is one): the next build runs to its end.
    dockerfile.write_text(f"FROM e2bdev/code-interpreter:latest\nRUN echo {marker} > /after\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "after", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert PodmanEngine().remove_build_leftovers(server.instance) == 0


def _images(server: Server, *flags: str) -> list[str]:
    """Ids of the platform's images (`-a`: with the layers under them). Asked again when Podman
    fails to list: another test's server may remove an image of its own while Podman lists
    (it then exits 125 on the image it no longer finds)."""
    import subprocess

    command = ["podman", "images", *flags, "-q", "--no-trunc"]
    command += ["--filter", f"label=org.orch.instance={server.instance}"]
    for _attempt in range(5):
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode == 0:
            return sorted(set(out.stdout.split()))
        time.sleep(0.2)
    raise AssertionError(f"podman images failed 5 times: {out.stderr}")


def test_rebuilds_and_restarts_leave_no_unnamed_images(make_server, tmp_path) -> None:
    import subprocess

    server: Server = make_server()
    server.start()
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM e2bdev/code-interpreter:latest\nRUN echo one > /one\n")
    res = server.cli("env", "create", "-f", str(dockerfile), "-n", "tiny")
    assert res.returncode == 0, res.stdout + res.stderr
    built = _images(server, "-a")
    assert len(_images(server)) == 1
    # Each --no-cache build makes a new image of its own tag; the one it replaced goes (nothing
    # names it), with the layers only it used (before, each rebuild left 5 more).
    for _ in range(2):
        res = server.cli("env", "build", "tiny", "--no-cache")
        assert res.returncode == 0, res.stdout + res.stderr
        assert len(_images(server, "-a")) == len(built) and len(_images(server)) == 1

    # Images of this platform's that no record names (as kills leave them: untagged, or tagged
    # by a build that then failed) go at the next start; named ones and other platforms' stay.
    image = wait_final(server, "tiny")["image"]
    stray = tmp_path / "Containerfile"
    for n, owner in enumerate((server.instance, server.instance, "someone-else")):
        stray.write_text(f"FROM {image}\nRUN echo {n} > /stray\n")
        tag = f"localhost/orch-env/{owner}:stray{n}"
        label = f"org.orch.instance={owner}"
        build = ["podman", "build", "-q", "--label", label, "-t", tag, "-f", str(stray)]
        subprocess.run(build, capture_output=True, check=True)
        if n != 1:
            subprocess.run(["podman", "untag", tag], check=True)
    listed = ["podman", "images", "-q", "--filter", "label=org.orch.instance=someone-else"]
    others = subprocess.run(listed, capture_output=True, text=True, check=True).stdout.split()
    try:
        assert len(_images(server)) == 3 and len(others) == 1
        server.stop()
        server.start()
        deadline = time.monotonic() + 60  # the build workers' recovery runs as they start
        while len(_images(server)) != 1:
            assert time.monotonic() < deadline, _images(server)
            time.sleep(0.2)
        assert wait_final(server, "tiny")["image"] == image
        assert subprocess.run(["podman", "image", "exists", image]).returncode == 0
        assert subprocess.run(["podman", "image", "exists", others[0]]).returncode == 0
    finally:
        subprocess.run(["podman", "rmi", "-f", *others], capture_output=True)


def test_cache_mounts_are_the_workspaces_own(server: Server) -> None:
    """Buildah's cache directories are the host's, named by the mount's id: a workspace planted
    files that another's build read (and `id=../../../etc` mounted the host's /etc)."""
    import shutil

    import httpx

    marker = f"planted-{os.getpid()}"
    plant = (
        "FROM e2bdev/code-interpreter:latest\n"
        f'RUN --mount=type=cache,target=/c,id=shared sh -c "echo {marker} > /c/planted"\n'
    )
    read = (
        "FROM e2bdev/code-interpreter:latest\n"
        "RUN --mount=type=cache,target=/c,id=shared cat /c/planted || echo nothing planted\n"
        "RUN --mount=type=cache,target=/e,id=../../../etc test ! -e /e/passwd\n"
    )
    try:
        with server.api() as admin:
            other = admin.post("/v1/workspaces", json={"name": "other"}).json()["token"]
            reader = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {other}"}, timeout=30
            )
            for client, name, text in (
                (admin, "plant", plant),
                (reader, "read", read),
                (admin, "again", read),
            ):
                resp = client.post("/v1/environments", json={"name": name, "dockerfile": text})
                assert resp.status_code == 201, resp.text
                deadline = time.monotonic() + 300
                while (data := client.get(f"/v1/environments/{name}").json())["status"] not in (
                    "ready",
                    "failed",
                ):
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
                assert data["status"] == "ready", data
            logs = {
                name: client.get(f"/v1/environments/{name}/logs").json()["text"]
                for client, name in ((reader, "read"), (admin, "again"))
            }
            reader.close()
        assert marker not in logs["read"] and "nothing planted" in logs["read"]
        assert marker in logs["again"]  # the workspace's own cache, kept for its next build
    finally:
        for left in Path("/var/tmp/buildah-cache").glob(f"orch-{server.instance}-*"):
            shutil.rmtree(left, ignore_errors=True)
