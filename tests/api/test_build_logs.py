"""A build's whole log, through the API, `orch env logs` and the environment page; the failure
excerpt and the base image in `orch env status`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete
from typer.testing import CliRunner

from orch.builder import base_images
from orch.cli import client as client_mod
from orch.cli.main import app
from orch.engine.fake import FakeEngine
from orch.server.app import create_app
from orch.services import build_output
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store.schema import BuildLogRow
from tests.api.conftest import client_of
from tests.conftest import build_log, drain, make_platform

runner = CliRunner()

DECISIVE = "fatal: could not resolve host: github.com"
FAILING = "FROM e2bdev/code-interpreter:latest\nRUN pip install git+https://github.com/x/y && exit 1\n"


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]):
    """`orch ...` against this app, as the workspace."""

    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")
    return lambda *args: runner.invoke(app, list(args))


def _failed(api: httpx.Client, platform: Platform, fake_engine: FakeEngine, monkeypatch) -> dict:
    """A failed build whose decisive line is 40 lines from the end of its log."""
    real = fake_engine.build

    def build(request, on_output, on_start=None, should_stop=None):  # type: ignore[no-untyped-def]
        def output(line: str) -> None:
            on_output(line)
            if "exit 1" in line:
                on_output(DECISIVE)
                for i in range(40):
                    on_output(f"noise {i}")

        return real(request, output, on_start, should_stop)

    monkeypatch.setattr(fake_engine, "build", build)
    resp = api.post("/v1/environments", json={"name": "broken", "dockerfile": FAILING})
    assert resp.status_code == 201, resp.text
    drain(platform)
    return api.get("/v1/environments/broken").json()  # type: ignore[no-any-return]


def _read_all(api: httpx.Client, path: str, **params: object) -> tuple[str, list[dict]]:
    text, chunks, offset = "", [], 0
    while True:
        chunk = api.get(path, params={**params, "offset": offset}).json()
        chunks.append(chunk)
        text, offset = text + chunk["text"], chunk["offset"]
        if not chunk["more"]:
            return text, chunks


def test_the_whole_log_comes_in_chunks_without_cutting_characters(
    api: httpx.Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.post("/v1/environments", json={"name": "one", "dockerfile": FAILING.replace(" && exit 1", "")})
    drain(platform)
    env = api.get("/v1/environments/one").json()
    more = "é€😀 " * 40 + "\n"
    whole = build_log(platform, env["build_id"]) + more
    with platform.store.session() as s:
        build_output.note(s, env["build_id"], more)
    monkeypatch.setattr(envs, "LOG_CHUNK", 7)  # cuts characters of 2, 3 and 4 bytes
    text, chunks = _read_all(api, "/v1/environments/one/logs")
    assert text == whole
    assert len(chunks) > 10 and all(c["more"] for c in chunks[:-1])
    assert chunks[-1]["size"] == len(whole.encode()) == chunks[-1]["offset"]
    assert chunks[-1]["status"] == "ready" and chunks[-1]["build_id"] == env["build_id"]


def test_a_build_by_id_and_unknown_ones(api: httpx.Client, platform: Platform) -> None:
    api.post("/v1/environments", json={"name": "one", "dockerfile": FAILING.replace(" && exit 1", "")})
    drain(platform)
    first = api.get("/v1/environments/one").json()["build_id"]
    with platform.store.session() as s:
        s.execute(delete(BuildLogRow).where(BuildLogRow.build_id == first))
        build_output.note(s, first, "the first build\n")
    api.post("/v1/environments/one/build", json={"no_cache": True})
    drain(platform)
    latest = api.get("/v1/environments/one/logs").json()
    assert latest["build_id"] != first and "the first build" not in latest["text"]
    old = api.get("/v1/environments/one/logs", params={"build": first}).json()
    assert (old["text"], old["build_id"]) == ("the first build\n", first)
    for other in ("bld_nosuch", api.get("/v1/environments/python-ml").json()["build_id"] or "bld_x"):
        resp = api.get("/v1/environments/one/logs", params={"build": other})
        assert resp.status_code == 404 and resp.json()["message"] == f"one has no build '{other}'."
    never = api.get("/v1/environments/python-ml/logs").json()
    assert never["build_id"] is None and never["status"] == "not-built"
    assert (never["text"], never["offset"], never["size"], never["more"]) == ("", 0, 0, False)


def test_env_logs_prints_the_whole_log(
    cli,
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    monkeypatch,
) -> None:
    env = _failed(api, platform, fake_engine, monkeypatch)
    res = cli("env", "logs", "broken")
    assert res.exit_code == 0, res.output
    assert res.output == build_log(platform, env["build_id"])
    assert DECISIVE in res.output and "noise 39" in res.output
    data = json.loads(cli("env", "logs", "broken", "--json").output)
    assert data["build_id"] == env["build_id"] and data["status"] == "failed" and DECISIVE in data["log"]
    assert cli("env", "logs", "broken", "--build", env["build_id"]).output == res.output
    assert cli("env", "logs", "broken", "--follow").output == res.output  # a finished build: all of it
    res = cli("env", "logs", "broken", "--build", "bld_nosuch")
    assert res.exit_code == 2 and "broken has no build 'bld_nosuch'." in res.output
    res = cli("env", "logs", "broken", "-f", "--json")
    assert res.exit_code == 2 and "don't go together" in res.output


def test_env_logs_says_why_there_is_nothing(cli, platform: Platform) -> None:
    res = cli("env", "logs", "python-ml")
    assert res.exit_code == 0
    assert "python-ml was never built; `orch env build python-ml` builds it." in res.output
    res = cli("env", "logs", "python")
    assert res.exit_code == 0 and "python is a base environment" in res.output


def test_env_logs_of_a_build_that_failed_before_any_output_says_why(cli, platform: Platform) -> None:
    """Found by a tester: a build refused before it started (the disk reserve) said it had 'no
    output yet' and that -f would follow it, though it had ended."""
    from sqlalchemy import update

    from orch.store.schema import BuildRow

    assert cli("env", "build", "python-ml", "-d").exit_code == 0
    with platform.store.session() as s:
        s.execute(
            update(BuildRow).values(status="failed", error="The build did not start: the disk is full.")
        )
    res = cli("env", "logs", "python-ml")
    assert res.exit_code == 0
    assert "failed before it wrote any output: The build did not start: the disk is full." in res.output
    assert "-f` follows it" not in res.output


def test_failure_output_shows_the_decisive_line_and_points_at_env_logs(
    cli,
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    monkeypatch,
) -> None:
    _failed(api, platform, fake_engine, monkeypatch)
    res = cli("env", "status", "broken")
    assert res.exit_code == 1
    assert DECISIVE in res.output and "noise 39" in res.output and "noise 5" not in res.output
    assert "whole log: orch env logs broken" in res.output
    # An environment keeps its Dockerfile: the way to a fixed one goes through a delete.
    assert "Fix the step, then `orch env delete broken --yes` and create it again" in res.output
    data = json.loads(cli("env", "status", "broken", "--json").output)
    assert DECISIVE in data["log_excerpt"]
    assert data["base_image"] == base_images.image_tag("code-interpreter")
    followed = cli("env", "status", "broken", "--follow")
    assert followed.exit_code == 1 and "noise 5" in followed.output  # the whole log, then the outcome


def test_status_shows_the_base_image(cli, api: httpx.Client, platform: Platform) -> None:
    api.post("/v1/environments", json={"name": "one", "dockerfile": FAILING.replace(" && exit 1", "")})
    drain(platform)
    res = cli("env", "status", "one")
    assert res.exit_code == 0 and f"base     {base_images.image_tag('code-interpreter')}" in res.output


def test_environment_page_shows_base_image_and_excerpt(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, workspace: tuple[str, str], monkeypatch
) -> None:
    _failed(api, platform, fake_engine, monkeypatch)
    api.cookies.set("orch_token", workspace[1])
    page = api.get("/ui/environments/broken")
    assert page.status_code == 200
    assert base_images.image_tag("code-interpreter") in page.text
    assert DECISIVE in page.text and 'data-build-log="env_' in page.text


def test_another_server_of_the_store_answers_for_a_build(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    database_url: str,
    tmp_path: Path,
    workspace: tuple[str, str],
) -> None:
    api.post("/v1/environments", json={"name": "one", "dockerfile": FAILING})
    drain(platform)
    here = api.get("/v1/environments/one/logs").json()
    assert here["status"] == "failed" and "STEP 2/2" in here["text"]
    assert not (platform.config.home / "logs" / "builds").exists()  # nothing on this disk
    other = make_platform(tmp_path / "other-home", fake_engine, database_url=database_url)
    try:
        with client_of(create_app(other, workers=False), workspace[1]) as there:
            assert there.get("/v1/environments/one/logs").json() == here
    finally:
        other.store.dispose()


def test_build_log_files_of_an_earlier_server_move_into_the_store(
    api: httpx.Client, platform: Platform
) -> None:
    api.post("/v1/environments", json={"name": "one", "dockerfile": FAILING})
    drain(platform)
    build_id = api.get("/v1/environments/one").json()["build_id"]
    with platform.store.session() as s:
        s.execute(delete(BuildLogRow))
    where = platform.config.home / "logs" / "builds"
    where.mkdir(parents=True)
    (where / f"{build_id}.log").write_text("the old log\n")
    (where / "bld_deleted_since.log").write_text("nobody's\n")
    assert build_output.import_files(platform) == 1
    assert not list(where.iterdir())
    assert build_log(platform, build_id) == "the old log\n"
    (where / f"{build_id}.log").write_text("the old log\n")  # stopped before the file went
    assert build_output.import_files(platform) == 0
    assert build_log(platform, build_id) == "the old log\n"


def test_a_failure_of_no_step_shows_the_servers_fix_not_fix_the_step(
    cli, api: httpx.Client, platform: Platform, fake_engine: FakeEngine
) -> None:
    """A failed push said "Fix the step, then delete and create again" and named the step that
    succeeded as the failed one; the fix is the registry's, then `orch env build`."""
    platform.config = platform.config.with_values(registry="127.0.0.1:5000")
    fake_engine.registry_error = "connection refused"
    api.post("/v1/environments", json={"name": "reg", "dockerfile": FAILING.replace(" && exit 1", "")})
    drain(platform)
    res = cli("env", "status", "reg")
    assert res.exit_code == 1
    assert "Fix the step" not in res.output and "Whole log: orch env logs reg" in res.output
    assert "`orch env build reg` pushes it again" in res.output
    assert json.loads(cli("env", "status", "reg", "--json").output)["failed_step"] is None


def test_env_build_of_one_being_built_says_so(cli, api: httpx.Client, platform: Platform) -> None:
    """It said `✓ Queued env_... "slow"` although nothing new was queued."""
    api.post("/v1/environments", json={"name": "slow", "dockerfile": FAILING.replace(" && exit 1", "")})
    queued = api.get("/v1/environments/slow").json()
    res = cli("env", "build", "slow", "-d")
    assert res.exit_code == 0, res.output
    assert f"slow is already being built ({queued['build_id']}); no other build was queued." in res.output
    assert "Queued" not in res.output
    assert api.get("/v1/environments/slow").json()["build_id"] == queued["build_id"]
    drain(platform)
    # Built, a build again queues one (the cache answers it here: ready at once).
    res = cli("env", "build", "slow", "-d")
    assert res.exit_code == 0 and "already" not in res.output
