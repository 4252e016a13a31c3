"""The web UI in real headless Chromium against a real server on real Podman."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import shot, sign_in
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sign_in_is_required_and_errors_are_sentences(page: Page, server: Server) -> None:
    page.goto("/ui/environments")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "sign-in")
    page.get_by_label("API token").fill("orch_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("The API token is not valid.")
    sign_in(page, server)
    page.goto("/ui/environments/env_doesnotexist")
    expect(page.get_by_role("alert")).to_have_text("No environment 'env_doesnotexist' in this workspace.")
    assert "Traceback" not in page.content()


def test_create_environment_and_watch_it_build(page: Page, server: Server) -> None:
    sign_in(page, server)
    expect(page.locator("tr[data-env='python-ml']")).to_contain_text("predefined")
    shot(page, "environments")
    page.get_by_role("link", name="New environment").click()
    page.get_by_label("Name").fill("from-the-browser")
    dockerfile = page.get_by_label("Dockerfile (validated as you type)")
    dockerfile.fill(
        'FROM e2bdev/code-interpreter:latest\nENV MADE_IN=browser\nRUN echo built > /built\nCMD ["x"]\n'
    )
    expect(page.locator("#findings .finding")).to_contain_text("line 4 CMD")
    shot(page, "environment-new")
    page.get_by_role("button", name="Create and build").click()
    page.wait_for_url("**/ui/environments/env_*")
    expect(page.locator("[data-field=status]")).to_have_text("ready", timeout=180_000)
    expect(page.locator("[data-field=cache]")).to_contain_text("miss (new Dockerfile)")
    expect(page.locator("[data-build-log]")).to_contain_text("STEP 2/")
    # The whole log, numbered as the Dockerfile (CMD, ignored, still counts), and the base image.
    expect(page.locator("[data-build-log]")).to_contain_text("STEP 3/4: RUN echo built > /built")
    expect(page.locator("[data-build-log]")).to_contain_text('STEP (orch): LABEL "org.orch.kind"')
    expect(page.locator("[data-field=base-image]")).to_contain_text("localhost/orch/code-interpreter:")
    expect(page.locator("#line-4 .finding")).to_contain_text("CMD is ignored")
    shot(page, "environment")


def test_copy_is_shown_on_its_line_and_nothing_is_built(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.goto("/ui/environments/new")
    page.get_by_label("Name").fill("with-copy")
    page.get_by_label("Dockerfile (validated as you type)").fill(
        "FROM e2bdev/code-interpreter:latest\nCOPY app.py /app/\n"
    )
    finding = page.locator("#findings .finding-error")
    expect(finding).to_contain_text("line 2 COPY")
    expect(finding).to_contain_text("no build context")
    page.get_by_role("button", name="Create and build").click()
    expect(page.locator("#create-error")).to_contain_text("line 2 COPY")
    shot(page, "environment-rejected")
    names = [e["name"] for e in json.loads(server.cli("env", "list", "--json").stdout)]
    assert "with-copy" not in names


def test_default_environment_in_settings_is_what_the_cli_sees(
    page: Page, server: Server, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "main.py").write_text("print('a')\n")
    assert server.cli("publish", str(tmp_path / "a"), "--name", "follower").returncode == 0
    sign_in(page, server)
    page.get_by_role("link", name="Settings").click()
    expect(page.locator("#affected-agents")).to_contain_text("follower")
    page.get_by_label("Default environment", exact=True).select_option(
        label="python-scraping (predefined, not-built)"
    )
    page.get_by_role("button", name="Save default").click()
    expect(page.get_by_role("status")).to_contain_text("The default is now python-scraping")
    shot(page, "settings")
    listed = {e["name"]: e["default"] for e in json.loads(server.cli("env", "list", "--json").stdout)}
    assert listed["python-scraping"] is True
    # And the other way round: the CLI's change shows on the page.
    assert server.cli("env", "clear-default").returncode == 0
    page.reload()
    expect(page.get_by_label("Default environment", exact=True)).to_have_value("")


def test_run_an_agent_and_see_its_logs_live(page: Page, server: Server, tmp_path: Path) -> None:
    agent = tmp_path / "ticker"
    agent.mkdir()
    (agent / "main.py").write_text(
        "import json, os, sys, time\n"
        "name = json.loads(os.environ['ORCH_INPUT'])['name']\n"
        "for i in range(3):\n"
        "    print(f'tick {i} for {name}', flush=True)\n"
        "    time.sleep(1)\n"
        "print('done', file=sys.stderr)\n"
    )
    assert server.cli("publish", str(agent)).returncode == 0
    sign_in(page, server)
    page.get_by_role("link", name="Agents").click()
    page.get_by_role("link", name="ticker").click()
    expect(page.locator("#would-run")).to_contain_text("python (base)")
    page.get_by_label("Input (JSON)").fill('{"name": "the browser"}')
    page.get_by_role("button", name="Run ticker").click()
    page.wait_for_url("**/ui/runs/run_*")
    log = page.locator("[data-run-log]")
    expect(log).to_contain_text("tick 0 for the browser")
    # Live: the first tick is on the page while the run is still going.
    assert page.locator("[data-field=status]").text_content() in ("running", "starting")
    expect(log).to_contain_text("tick 2 for the browser", timeout=60_000)
    expect(page.locator("[data-field=status]")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("[data-field=environment]")).to_have_text("python (base)")
    expect(page.locator("[data-field=exit_code]")).to_have_text("0")
    shot(page, "run")
    page.get_by_role("link", name="Runs").click()
    expect(page.locator("table")).to_contain_text("succeeded")
    shot(page, "runs")


def test_a_run_page_opened_before_the_agent_starts_shows_its_status_change(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """The page is opened while the run installs its requirements (`starting`, for a second or
    so): once the agent prints, the status on the page says `running`, not what it loaded with."""
    agent = tmp_path / "slow-start"
    agent.mkdir()
    (agent / "main.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(3)\n")
    (agent / "requirements.txt").write_text(f"# {time.time_ns()}: installed afresh\nsix==1.16.0\n")
    assert server.cli("publish", str(agent)).returncode == 0
    sign_in(page, server)
    page.get_by_role("link", name="Agents").click()
    page.get_by_role("link", name="slow-start").click()
    page.get_by_role("button", name="Run slow-start").click()
    page.wait_for_url("**/ui/runs/run_*")
    status = page.locator("[data-field=status]")
    assert status.text_content() in ("queued", "starting")  # as the page was loaded
    expect(page.locator("[data-run-log]")).to_contain_text("up", timeout=60_000)
    assert status.text_content() == "running"  # from the same answer that brought the output
    expect(status).to_have_text("succeeded", timeout=60_000)


def test_service_state_logs_and_restart(page: Page, server: Server, tmp_path: Path) -> None:
    from tests.e2e.test_ui_hung_server import frozen
    from tests.integration.test_runs import write
    from tests.integration.test_services import HTTP_SERVICE

    write(tmp_path / "web", {"main.py": HTTP_SERVICE})
    res = server.cli("service", "deploy", str(tmp_path / "web"), "--name", "web")
    assert res.returncode == 0, res.stdout + res.stderr
    sign_in(page, server)
    page.get_by_role("link", name="Services").click()
    row = page.locator("tr[data-service='web']")
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("/services/default/web/")
    shot(page, "services")
    row.get_by_role("link", name="web", exact=True).click()
    expect(page.locator("[data-service-log]")).to_contain_text("listening on 8080")
    before = server.get("/v1/services/web")["container"]
    # The page reloads itself once the restart request returns; wait for that reload, or a
    # later page.reload() can collide with it ("Not attached to an active page").
    with page.expect_navigation():
        page.get_by_role("button", name="Restart").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the supervisor replaces the container in the background
        after = server.get("/v1/services/web")
        if after["container"] not in (None, before) and after["state"] == "running":
            break
        page.wait_for_timeout(500)
    assert after["container"] != before and after["state"] == "running", after
    page.reload()
    expect(page.locator("#service-state")).to_have_text("running")
    shot(page, "service")
    # While a Restart is pending (the server frozen: it answers nothing), Stop can't be pressed.
    restart, stop = page.get_by_role("button", name="Restart"), page.get_by_role("button", name="Stop")
    with page.expect_navigation(timeout=60_000), frozen(server):  # reloaded once it answers
        restart.click()
        expect(restart).to_be_disabled()
        expect(stop).to_be_disabled()


def seconds(uptime: str | None) -> int:
    """A service page's uptime of under a minute ("12 s") in seconds; -1 for any other text."""
    found = re.fullmatch(r"(\d+) s", (uptime or "").strip())
    return int(found.group(1)) if found else -1


def test_a_service_page_shows_a_crash_and_its_restart_without_a_reload(
    page: Page, server: Server, tmp_path: Path
) -> None:
    from tests.integration.test_runs import write
    from tests.integration.test_services import HTTP_SERVICE

    write(tmp_path / "flaky", {"main.py": HTTP_SERVICE})
    res = server.cli("service", "deploy", str(tmp_path / "flaky"), "--name", "flaky")
    assert res.returncode == 0, res.stdout + res.stderr
    sign_in(page, server)
    # Up 12 s or more when the page is rendered (two digits, and well above the new replica's
    # few seconds when the page catches up with it), so its uptime can't pass for the new one's.
    deadline = time.monotonic() + 60
    while (server.get("/v1/services/flaky")["uptime"] or 0) < 12 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    page.goto(f"{server.url}/ui/services/flaky")
    expect(page.locator("#service-uptime")).to_have_text(re.compile(r"^\d\d s$"))
    rendered = seconds(page.locator("#service-uptime").text_content())
    expect(page.locator("#service-restarts")).to_have_text("0")
    expect(page.locator("#service-state")).to_have_text("running")
    # It crashes once, from outside (a new container starts afresh, so a crash the service
    # scheduled itself would come again on every start).
    killed = server.get("/v1/services/flaky")["container"]
    subprocess.run(["podman", "kill", killed], capture_output=True, check=True)
    # No reload from here on: the page follows the service.
    expect(page.locator("#service-restarts")).to_have_text("1", timeout=60_000)
    expect(page.locator("[data-service-log]")).to_contain_text("listening on 8080")
    expect(page.locator("#service-state")).to_have_text("running", timeout=60_000)
    # The new replica's uptime as the API says it, not the old one's the page was rendered with
    # (found by a tester: it stayed the old one's).
    deadline = time.monotonic() + 30
    while True:
        shown = page.locator("#service-uptime").text_content()
        up = server.get("/v1/services/flaky")["uptime"]
        if up is not None and abs(seconds(shown) - up) <= 2:
            break
        assert time.monotonic() < deadline, f"the page says {shown!r}, the API {up} s"
        page.wait_for_timeout(250)
    assert seconds(shown) < rendered, (shown, rendered)
    after = server.get("/v1/services/flaky")
    assert after["restarts"] == 1 and after["container"] != killed and after["last_exit"] == 137
