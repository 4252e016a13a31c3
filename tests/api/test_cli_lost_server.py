"""The CLI's followers of a build or a deployment whose server goes meanwhile (a stop, a kill)
say that they lost it, what was stored and what becomes of it, and how to follow it again, exit
1: as `orch run` says it (tests/unit/test_follow_lost_server.py), not as a server never reached,
which reads as if the create or the deploy failed and nothing happened."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from orch.cli import client as client_mod
from orch.cli.main import app
from orch.services import build_output
from orch.services.platform import Platform
from orch.store.schema import BuildRow
from orch.workers import builds
from tests.api.test_services import answering as answering  # autouse: new containers answer
from tests.api.test_services import work
from tests.conftest import drain

GOOD = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"
Hook = Callable[[httpx.Request], bool]


class Going(httpx.BaseTransport):
    """The in-process server, until it goes: after answering a request `goes_after` is true of
    (having run `stop`, as a graceful stop settles what it was doing), every request fails to
    connect, as to a server that is no more."""

    def __init__(self, inner: httpx.BaseTransport, goes_after: Hook, stop: Callable[[], None]) -> None:
        self.inner, self.goes_after, self.stop = inner, goes_after, stop
        self.gone = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.gone:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        answer = self.inner.handle_request(request)
        if self.goes_after(request):
            answer.read()
            self.stop()
            self.gone = True
        return answer


def first_log(request: httpx.Request) -> bool:
    return request.method == "GET" and request.url.path.endswith("/logs")


@pytest.fixture
def going(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]):
    """Run a CLI command whose server goes after answering a request `goes_after` is true of."""

    def invoke(*args: str, goes_after: Hook = first_log, stop: Callable[[], None] = lambda: None):
        transport = Going(api._transport, goes_after, stop)  # type: ignore[arg-type]

        def make() -> client_mod.Client:
            return client_mod.Client("http://testserver", workspace[1], transport=transport)

        monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
        res = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert transport.gone, res.output  # the server went while the command followed
        return res

    return invoke


def started(platform: Platform, line: str = "Step 1/2 : FROM e2bdev/code-interpreter:latest\n") -> str:
    """A worker claims the queued build and it writes `line`; its id."""
    build_id = builds.claim(platform)
    assert build_id is not None
    with platform.store.session() as s:
        build_output.note(s, build_id, line)
    return build_id


def stopped(platform: Platform, build_id: str) -> Callable[[], None]:
    """A graceful stop of the server: the build it was running is queued again."""

    def stop() -> None:
        with platform.store.session() as s:
            builds._interrupted(platform, s, s.get(BuildRow, build_id))

    return stop


def said(res: Result) -> str:
    """What the command said; it exited 1, without the connection's error or a traceback."""
    assert res.exit_code == 1, res.output
    assert "Cannot reach" not in res.output and "Traceback" not in res.output
    return res.output


def test_env_create_says_the_environment_was_made_and_its_build_goes_on(
    going, api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(GOOD)
    building: list[str] = []

    def gone_once_following(request: httpx.Request) -> bool:
        if request.method == "POST":  # created: a worker starts its build
            building.append(started(platform))
        return first_log(request)

    def stop() -> None:
        stopped(platform, building[0])()

    dockerfile = str(tmp_path / "Dockerfile")
    res = going(
        "env", "create", "-f", dockerfile, "-n", "mine", "--logs", goes_after=gone_once_following, stop=stop
    )
    out = said(res)
    assert "Step 1/2 : FROM e2bdev" in out  # the log it followed, then what happened
    assert f"Lost the orch server while following the build {building[0]} of environment mine" in out
    assert "The environment mine was created, and its build is kept" in out
    assert "runs again once it is back" in out and "`orch env logs mine -f` follows it" in out
    # It was: the build was queued again by the stop, and runs once the server is back.
    env = api.get("/v1/environments/mine").json()
    assert (env["status"], env["build_id"]) == ("queued", building[0])
    assert drain(platform) == 1
    assert api.get("/v1/environments/mine").json()["status"] == "ready"


def test_env_build_says_its_build_goes_on(going, api: httpx.Client, platform: Platform) -> None:
    created = api.post("/v1/environments", json={"name": "mine", "dockerfile": GOOD})
    assert created.status_code == 201, created.text
    drain(platform)
    res = going("env", "build", "mine", "--no-cache")
    out = said(res)
    build_id = api.get("/v1/environments/mine").json()["build_id"]
    assert f"Lost the orch server while following the build {build_id} of environment mine" in out
    assert "The build is kept" in out and "was created" not in out
    assert "`orch env logs mine -f` follows it" in out


@pytest.mark.parametrize(
    "args", [("env", "logs", "mine", "-f"), ("env", "status", "mine", "--follow")], ids=["logs", "status"]
)
def test_env_logs_and_status_follow_say_the_server_went(
    going, api: httpx.Client, platform: Platform, args: tuple[str, ...]
) -> None:
    assert api.post("/v1/environments", json={"name": "mine", "dockerfile": GOOD}).status_code == 201
    build_id = started(platform)
    res = going(*args, stop=stopped(platform, build_id))
    out = said(res)
    assert "Step 1/2 : FROM e2bdev" in out
    assert f"Lost the orch server while following the build {build_id} of environment mine" in out
    assert "`orch env logs mine -f` follows it" in out
    assert api.get("/v1/environments/mine").json()["status"] == "queued"


def test_env_logs_follow_ends_the_log_s_open_line_on_a_terminal(
    going, api: httpx.Client, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert api.post("/v1/environments", json={"name": "mine", "dockerfile": GOOD}).status_code == 201
    build_id = started(platform, "Step 1/2 : FROM")  # a line the log has not ended yet
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    out = said(going("env", "logs", "mine", "--build", build_id, "-f"))
    assert "Step 1/2 : FROM\n" in out and "FROM✗" not in out
    assert f"`orch env logs mine --build {build_id} -f` follows it" in out


def test_service_deploy_says_its_deployment_goes_on(
    going, api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orch.cli.service as service_cli

    monkeypatch.setattr(service_cli.time, "sleep", lambda _s: None)
    root = tmp_path / "api"
    root.mkdir()
    (root / "main.py").write_text("")

    def deployment(request: httpx.Request) -> bool:
        return request.method == "GET" and "/deployments/" in request.url.path

    out = said(going("service", "deploy", str(root), goes_after=deployment))
    assert "Lost the orch server while following the deployment of api v1" in out
    assert "v1 was uploaded, and its deployment is kept" in out
    assert "`orch service status api` shows how it went" in out
    assert api.get("/v1/services/api/deployments/1").json()["status"] == "queued"
    work(platform)  # the server is back: the deployment goes on
    assert api.get("/v1/services/api").json()["version"] == 1
