"""Services through the API, in-process, on the fake engine: deploy, supervision, redeploy, proxy."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from orch.bundle import pack_directory
from orch.engine.fake import FakeEngine
from orch.services import bundles, images, leases, reconcile, workspaces
from orch.services import deployed as use_cases
from orch.services.platform import Platform
from orch.store.schema import ServiceReplicaRow
from orch.workers import deploys
from orch.workers.supervisor import Supervisor
from tests.api.conftest import client_of


def bundle(tmp_path: Path, files: dict[str, str], name: str = "svc") -> bytes:
    root = tmp_path / name
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (root / rel).write_text(text)
    return pack_directory(root).data


def deploy(api: httpx.Client, name: str, data: bytes, command: str | None = None) -> httpx.Response:
    params = {"command": command} if command is not None else {}
    return api.post(
        f"/v1/services/{name}/deploy",
        params=params,
        content=data,
        headers={"Content-Type": "application/gzip"},
    )


@pytest.fixture(autouse=True)
def answering(platform: Platform) -> list[bool]:
    """Whether a new container 'answers on its port' (the fake engine runs nothing)."""
    state = [True]
    platform.probe = lambda address, port: state[0]
    return state


def work(platform: Platform) -> None:
    """Run every queued deployment now, in this thread, then one supervisor pass."""
    while (dep := deploys.claim(platform)) is not None:
        deploys.execute(platform, dep)
    reconcile.reconcile(platform)


def deployed(api: httpx.Client, platform: Platform, tmp_path: Path, name: str = "web", **files: str) -> dict:
    resp = deploy(api, name, bundle(tmp_path, files or {"main.py": "print('hi')\n"}, name))
    assert resp.status_code == 201, resp.text
    work(platform)
    return api.get(f"/v1/services/{name}").json()


def current_spec(fake_engine: FakeEngine, svc: dict):
    return fake_engine.detached[svc["container"]][0]


@pytest.mark.parametrize(
    ("files", "pythonpath"),
    [
        ({"requirements.txt": "six\n"}, "/opt/orch/deps/python:/app/lib"),  # found after the deps
        ({}, "/app/lib"),  # no dependencies: its own, as Podman gives it
    ],
)
def test_a_services_own_pythonpath_comes_after_its_dependencies(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    files: dict[str, str],
    pythonpath: str,
) -> None:
    """orch.yaml's `env: {PYTHONPATH: ...}` replaced the image's ENV, where the dependencies'
    directory is: they were not found. A restart (the version read back from the store) too."""
    own = {"main.py": "", "orch.yaml": "env: {PYTHONPATH: /app/lib}\n", **files}
    svc = deployed(api, platform, tmp_path, **own)
    assert current_spec(fake_engine, svc).env["PYTHONPATH"] == pythonpath
    assert api.post("/v1/services/web/restart").status_code == 200
    work(platform)
    svc = api.get("/v1/services/web").json()
    assert current_spec(fake_engine, svc).env["PYTHONPATH"] == pythonpath


def test_deploy_builds_an_image_with_dependencies_and_runs_hardened(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(
        api,
        platform,
        tmp_path,
        **{
            "main.py": "",
            "requirements.txt": "six\n",
            "orch.yaml": "resources: {memory: 256Mi, cpus: 0.5, pids: 64}\nenv: {MODE: prod}\n",
        },
    )
    assert svc["state"] == "running" and svc["version"] == 1 and svc["restarts"] == 0
    assert svc["url"] == "http://localhost:8751/services/team/web/" and svc["command"] == [
        "python",
        "main.py",
    ]
    build = fake_engine.builds[-1]
    assert build.containerfile.startswith("FROM localhost/orch/service-runner:")
    assert "uv pip install" in build.containerfile and "npm" not in build.containerfile
    assert build.context is not None and (build.context / "main.py").exists()
    assert build.tag == f"localhost/orch-svc/{platform.instance}:web-{svc['id']}-v1"
    # What its steps write is bounded while it runs, as an environment's build is.
    assert build.max_size == int(platform.config.build_max_size) > 0
    assert build.disk_reserve == int(platform.config.build_disk_reserve) > 0
    assert (
        build.labels["org.orch.kind"] == "service" and build.labels["org.orch.instance"] == platform.instance
    )
    spec = current_spec(fake_engine, svc)
    assert spec.image == build.tag and spec.argv == ["python", "main.py"]
    assert spec.user == "1000:1000" and spec.read_only and not spec.cap_add and spec.network
    assert (spec.memory_bytes, spec.cpus, spec.pids) == (256 * 1024**2, 0.5, 64)
    assert spec.env["PORT"] == "8080" and spec.env["MODE"] == "prod"
    assert spec.labels["org.orch.kind"] == "service" and spec.labels["org.orch.service"] == svc["id"]
    assert len(fake_engine.detached) == 1


def test_node_dependencies_use_npm_ci_with_a_lockfile(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    deployed(api, platform, tmp_path, **{"index.js": "", "package.json": "{}", "package-lock.json": "{}"})
    text = fake_engine.builds[-1].containerfile
    assert "npm ci" in text and "uv pip" not in text


def test_a_service_on_its_own_dockerfile(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """Built as an environment is (the same rules and cache), the dependencies on top."""
    from tests.conftest import drain

    dockerfile = "FROM e2bdev/code-interpreter:latest\nRUN echo built > /opt/marker\nUSER nobody\n"
    files = {"main.py": "", "requirements.txt": "six\n", "Dockerfile": dockerfile}
    resp = deploy(api, "web", bundle(tmp_path, files))
    assert resp.status_code == 201, resp.text
    envs = {e["name"]: e for e in api.get("/v1/environments").json()}
    assert "web-dockerfile" in envs
    drain(platform)  # the build worker builds the environment
    work(platform)
    svc = api.get("/v1/services/web").json()
    assert svc["state"] == "running" and svc["version"] == 1, svc
    env_image = api.get("/v1/environments/web-dockerfile").json()["image"]
    text = fake_engine.builds[-1].containerfile
    assert text.startswith(f"FROM {env_image}\nUSER root\n") and "uv pip install" in text
    # Another service on the same Dockerfile reuses that environment: no second build of it.
    builds = len(fake_engine.builds)
    assert deploy(api, "api", bundle(tmp_path, {**files, "main.py": "# api\n"}, "api")).status_code == 201
    drain(platform)
    work(platform)
    assert len(fake_engine.builds) == builds + 1  # the service's own image only
    assert [e["name"] for e in api.get("/v1/environments").json()].count("web-dockerfile") == 1


def test_a_bad_dockerfile_is_refused_with_its_findings_and_nothing_is_made(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    data = bundle(tmp_path, {"main.py": "", "Dockerfile": "FROM ubuntu:22.04\nEXPOSE 80\n"})
    resp = deploy(api, "web", data)
    assert resp.status_code == 422
    body = resp.json()
    assert body["message"].startswith("The bundle's Dockerfile is not valid: line 1 FROM")
    assert {f["instruction"] for f in body["findings"]} >= {"FROM", "EXPOSE"}
    assert api.get("/v1/services").json() == []
    assert "web-dockerfile" not in [e["name"] for e in api.get("/v1/environments").json()]
    work(platform)
    assert fake_engine.builds == [] and fake_engine.detached == {}


def test_the_command_comes_from_the_flag_then_the_manifest_then_the_entrypoint(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    files = {"app.py": "", "orch.yaml": "runtime: {command: python app.py --fast}\n"}
    resp = deploy(api, "a", bundle(tmp_path, files, "a"))
    assert resp.json()["command"] == ["python", "app.py", "--fast"]
    resp = deploy(api, "b", bundle(tmp_path, files, "b"), command="python -m http.server")
    assert resp.json()["command"] == ["python", "-m", "http.server"]
    resp = deploy(api, "c", bundle(tmp_path, {"index.js": ""}, "c"))
    assert resp.json()["command"] == ["node", "index.js"]
    assert deploy(api, "d", bundle(tmp_path, {"x.txt": ""}, "d")).status_code == 400


def test_run_command_runs_as_root_then_drops_to_the_sandbox_user(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    files = {"main.py": "", "orch.yaml": "run_command: apt-get install -y ffmpeg\n"}
    svc = deployed(api, platform, tmp_path, **files)
    spec = current_spec(fake_engine, svc)
    assert spec.user == "0:0" and not spec.read_only and "SETUID" in spec.cap_add
    script = spec.argv[2]
    assert spec.argv[:2] == ["/bin/sh", "-c"] and spec.argv[-2:] == ["python", "main.py"]
    assert script.index("apt-get install -y ffmpeg") < script.index("setpriv --reuid=1000")


def test_a_crash_is_restarted_with_backoff_and_counted(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(api, platform, tmp_path)
    first = svc["container"]
    log = platform.config.home / "logs" / "services" / svc["id"] / f"{first}.log"
    log.write_text("2026-01-01T00:00:00Z stderr F Traceback: boom\n")
    fake_engine.exit_container(first, 1)
    reconcile.reconcile(platform)
    svc = api.get("/v1/services/web").json()
    assert (svc["state"], svc["restarts"], svc["last_exit"]) == ("restarting", 1, 1)
    assert "Traceback: boom" in svc["last_output"] and svc["container"] is None
    assert first not in fake_engine.detached
    reconcile.reconcile(platform)  # within the backoff: nothing starts
    assert api.get("/v1/services/web").json()["container"] is None
    _skip_backoff(platform)
    reconcile.reconcile(platform)
    svc = api.get("/v1/services/web").json()
    assert svc["state"] == "running" and svc["container"] not in (None, first)
    assert "Traceback: boom" in api.get("/v1/services/web/logs").json()["text"]


def test_quick_crashes_in_a_row_make_it_crash_looping(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    deployed(api, platform, tmp_path)
    for _ in range(reconcile.CRASH_LOOP_AFTER):
        fake_engine.exit_container(api.get("/v1/services/web").json()["container"], 2)
        reconcile.reconcile(platform)
        _skip_backoff(platform)
        reconcile.reconcile(platform)
    svc = api.get("/v1/services/web").json()
    assert svc["state"] == "crash-looping" and svc["restarts"] == reconcile.CRASH_LOOP_AFTER
    assert reconcile.backoff(1) == 1 and reconcile.backoff(3) == 4 and reconcile.backoff(20) == 60


def test_supervisor_adopts_its_container_and_removes_duplicates_and_orphans(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    svc = deployed(api, platform, tmp_path)
    spec = current_spec(fake_engine, svc)
    # A second copy of the same service (as a server killed mid-start could leave) and a
    # container of a service that no longer exists.
    fake_engine.start_container(spec.__class__(**{**spec.__dict__, "name": "dup"}), tmp_path / "dup.log", 1)
    orphan_labels = {**spec.labels, "org.orch.service": "svc_gone"}
    fake_engine.start_container(
        spec.__class__(**{**spec.__dict__, "name": "orphan", "labels": orphan_labels}), tmp_path / "o.log", 1
    )
    started = len(fake_engine.started)
    reconcile.reconcile(platform)
    assert list(fake_engine.detached) == [svc["container"]]
    assert len(fake_engine.started) == started  # the running one was adopted, not replaced
    # Another platform's containers are never touched.
    other = {**spec.labels, "org.orch.instance": "someoneelse"}
    fake_engine.start_container(
        spec.__class__(**{**spec.__dict__, "name": "x", "labels": other}), tmp_path / "x", 1
    )
    reconcile.reconcile(platform)
    assert "x" in fake_engine.detached


def test_without_services_the_supervisor_lists_no_containers_until_one_is_deployed(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle pass costs the store a look, not the engine a `podman ps` (tens of ms of CPU a
    second); a deploy, a container still there, or a minute gone, and it lists again."""
    listed: list[dict[str, str]] = []
    real = fake_engine.list_containers
    monkeypatch.setattr(fake_engine, "list_containers", lambda labels: listed.append(labels) or real(labels))
    reconcile.reconcile(platform)  # the first pass lists: a killed server may have left one
    for _ in range(3):
        reconcile.reconcile(platform)
    assert len(listed) == 1
    monkeypatch.setattr(reconcile, "IDLE_LISTING", 0.0)
    reconcile.reconcile(platform)
    assert len(listed) == 2
    monkeypatch.setattr(reconcile, "IDLE_LISTING", 60.0)
    svc = deployed(api, platform, tmp_path)  # its deploy worker starts it, then passes follow
    reconcile.reconcile(platform)
    assert len(listed) > 2 and list(fake_engine.detached) == [svc["container"]]
    # Deleted: the passes list until its container is gone, then rest again.
    assert api.delete("/v1/services/web").status_code in (200, 204)
    for _ in range(3):
        reconcile.reconcile(platform)
    assert fake_engine.detached == {}
    before = len(listed)
    for _ in range(3):
        reconcile.reconcile(platform)
    assert len(listed) == before


def test_redeploy_switches_only_once_the_new_version_answers(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path, answering: list[bool]
) -> None:
    v1 = deployed(api, platform, tmp_path)
    answering[0] = False
    platform.config = platform.config.with_values(service_start_timeout=1)
    resp = deploy(api, "web", bundle(tmp_path, {"main.py": "print('v2')\n"}, "v2"))
    assert resp.status_code == 201 and resp.json()["version"] == 2
    work(platform)
    failed = api.get("/v1/services/web/deployments/2").json()
    assert failed["status"] == "failed" and "did not answer on port 8080" in failed["error"]
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["container"], svc["state"]) == (1, v1["container"], "running")
    assert "v2 was not deployed" in svc["error"] and list(fake_engine.detached) == [v1["container"]]
    answering[0] = True
    deploy(api, "web", bundle(tmp_path, {"main.py": "print('v3')\n"}, "v3"))
    work(platform)
    svc = api.get("/v1/services/web").json()
    assert svc["version"] == 3 and svc["error"] is None and svc["container"] != v1["container"]
    assert list(fake_engine.detached) == [svc["container"]]
    assert f"localhost/orch-svc/{platform.instance}:web-{svc['id']}-v1" not in fake_engine.images_by_tag


def test_services_of_one_name_in_two_workspaces_never_share_an_image(
    api: httpx.Client, app: FastAPI, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """Found by a tester: service images were tagged `NAME-vN`, so another workspace's deploy of
    a service of the same name retagged this one's image, and this one's next restart (or a
    crash's, or a new replica's) ran the other workspace's code at this one's URL."""
    ours = deployed(api, platform, tmp_path, "web", **{"main.py": "print('ours')\n"})
    with platform.store.session() as s:
        _, token = workspaces.create_workspace(s, "other")
    with client_of(app, token) as other:
        theirs = deployed(other, platform, tmp_path / "other", "web", **{"main.py": "print('theirs')\n"})
    tags = [b.tag for b in fake_engine.builds]
    assert len(set(tags)) == 2 and all(ours["id"] in t or theirs["id"] in t for t in tags), tags
    assert api.post("/v1/services/web/restart").status_code in (200, 202)
    work(platform)
    restarted = api.get("/v1/services/web").json()
    image = fake_engine.images_by_tag[current_spec(fake_engine, restarted).image]
    assert image.labels["org.orch.service"] == ours["id"], image.labels
    assert (tmp_path / "web" / "main.py").read_text() == "print('ours')\n"


def test_a_deployment_removes_every_earlier_version_of_its_service(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """Found by the faults suite: a deployment run again after a kill that came past its switch
    found itself the version served and removed nothing, and the version before it (whose
    container was still up at that start, so the start's sweep kept its image) stayed for good."""
    v1 = deployed(api, platform, tmp_path, "web")
    left = fake_engine.add_image(
        images.service_tag(platform, v1["id"], "web", 0), platform.service_labels(v1["id"])
    ).tags[0]
    theirs = fake_engine.add_image(
        "localhost/orch-svc/x:other-v1", platform.service_labels("svc_other")
    ).tags[0]
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "print(2)\n"}, "v2")).status_code == 201
    work(platform)
    v2 = api.get("/v1/services/web").json()
    assert v2["version"] == 2
    ours = [list(i.tags) for i in fake_engine.images({"org.orch.service": v1["id"]})]
    assert ours == [[v2["image"]]], ours  # v1's and the one left behind went
    assert left not in fake_engine.images_by_tag and theirs in fake_engine.images_by_tag


def test_a_stop_while_the_new_version_starts_queues_the_deployment_again(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path, answering: list[bool]
) -> None:
    """It was failed at once as "did not answer on port 8080 within 60 s" (found by a tester)."""
    v1 = deployed(api, platform, tmp_path)
    answering[0] = False
    deploy(api, "web", bundle(tmp_path, {"main.py": "print('v2')\n"}, "v2"))
    dep = deploys.claim(platform)
    assert dep is not None
    stop = threading.Event()
    ticker = threading.Timer(0.5, stop.set)  # the server stops while v2 does not answer yet
    ticker.start()
    deploys.execute(platform, dep, stop)
    ticker.join()
    again = api.get("/v1/services/web/deployments/2").json()
    assert (again["status"], again["error"]) == ("queued", None), again
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["container"]) == (1, v1["container"])  # v1 serves on
    assert list(fake_engine.detached) == [v1["container"]]  # v2's container went
    answering[0] = True
    work(platform)  # the next start deploys it
    assert api.get("/v1/services/web").json()["version"] == 2


def test_a_server_killed_while_removing_the_old_version_has_stored_the_switch(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by the faults test: the old container was removed before the switch was stored, so a
    # kill in between left the service pointing at a container (and an image) that was gone.
    v1 = deployed(api, platform, tmp_path)
    assert deploy(api, "web", bundle(tmp_path, {"main.py": "print('v2')\n"}, "v2")).status_code == 201

    class Killed(BaseException):
        """The server process dies here."""

    def killed(name: str, timeout: int = 10) -> None:
        raise Killed

    monkeypatch.setattr(fake_engine, "remove_container", killed)
    with pytest.raises(Killed):
        work(platform)
    monkeypatch.undo()
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["state"]) == (2, "running") and svc["container"] != v1["container"]
    # The next start queues the deployment again, which finds its replica replaced already; the
    # supervisor removes v1's container, which no replica points at.
    deploys.recover(platform)
    work(platform)
    assert api.get("/v1/services/web/deployments/2").json()["status"] == "ready"
    assert list(fake_engine.detached) == [svc["container"]]
    assert api.get("/v1/services/web").json()["restarts"] == 0


def test_a_vanished_container_is_removed_by_name_and_restarted(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    svc = deployed(api, platform, tmp_path)
    fake_engine.detached.pop(svc["container"])  # gone without a trace, as `podman rm` would leave it
    removed: list[str] = []
    remove = fake_engine.remove_container
    monkeypatch.setattr(
        fake_engine, "remove_container", lambda name, timeout=10: (removed.append(name), remove(name))
    )
    reconcile.reconcile(platform)
    # What the engine keeps of it (its cgroups on Podman) goes too.
    assert removed == [svc["container"]]
    after = api.get("/v1/services/web").json()
    assert (after["state"], after["restarts"], after["last_exit"]) == ("restarting", 1, None)


def test_versions_out_of_range_are_not_found(api: httpx.Client, platform: Platform, tmp_path: Path) -> None:
    # 2**64 answered 500 on both stores (SQLite: OverflowError; PostgreSQL: integer out of range).
    deployed(api, platform, tmp_path)
    assert api.get("/v1/services/web/deployments/1").status_code == 200
    for version in [0, -1, 2**31, 2**64]:
        resp = api.get(f"/v1/services/web/deployments/{version}")
        assert resp.status_code == 404, resp.text
        assert resp.json()["message"] == f"web has no version {version}."


def test_stop_restart_delete(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    deployed(api, platform, tmp_path)
    assert api.post("/v1/services/web/stop").json()["state"] == "stopped"
    assert fake_engine.detached == {}
    reconcile.reconcile(platform)
    assert fake_engine.detached == {}  # stays stopped
    restarted = api.post("/v1/services/web/restart").json()
    assert restarted["state"] == "running" and restarted["desired"] == "running"
    assert len(fake_engine.detached) == 1
    assert api.delete("/v1/services/web").json() == {"deleted": "web"}
    assert api.get("/v1/services/web").status_code == 404
    assert not [t for t in fake_engine.images_by_tag if "orch-svc" in t]


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers["Content-Length"])))

    def _answer(self, body: bytes) -> None:
        text = json.dumps(
            {
                "path": self.path,
                "body": body.decode(),
                "auth": self.headers.get("Authorization"),
                "prefix": self.headers.get("X-Forwarded-Prefix"),
            }
        ).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("X-From", "service")
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    monkeypatch.setattr(use_cases, "PORT", server.server_address[1])  # where the proxy sends it
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()


def test_the_proxy_forwards_to_the_service_without_the_token(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, echo: None
) -> None:
    deployed(api, platform, tmp_path)
    resp = site.post("/services/team/web/hello/there?x=1&x=2", content=b"payload")
    assert resp.status_code == 201 and resp.headers["x-from"] == "service"
    assert resp.json() == {
        "path": "/hello/there?x=1&x=2",
        "body": "payload",
        "auth": None,
        "prefix": "/services/team/web",
    }
    assert site.get("/services/team/web").json()["path"] == "/"
    assert site.get("/services/other/web/").status_code == 404
    assert site.get("/services/team/nope/").status_code == 404
    # A NUL in the service's name names nothing (PostgreSQL refused it in the lookup: 500); what
    # the proxy forwards after the name is the service's business, as the client encoded it (a NUL
    # made httpx raise: 500; '%2541' reached the service as '%41').
    assert site.get("/services/team/we%00b/").status_code == 404
    assert site.get("/services/team/web/a%00b?q=%00").json()["path"] == "/a%00b?q=%00"
    assert site.get("/services/team/web/a%2541%20b").json()["path"] == "/a%2541%20b"
    assert (
        httpx.Client(transport=site._transport, base_url=site.base_url).get("/services/team/web/").status_code
        == 401
    )
    api.post("/v1/services/web/stop")
    assert site.get("/services/team/web/").status_code == 503


def _skip_backoff(platform: Platform) -> None:
    with platform.store.session() as s:
        for replica in s.query(ServiceReplicaRow):
            if replica.next_start_at is not None:
                replica.next_start_at = replica.next_start_at - timedelta(seconds=120)


@pytest.fixture
def cli(api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]):
    from typer.testing import CliRunner

    from orch.cli import client as client_mod
    from orch.cli.main import app

    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_deploy_status_list_logs(cli, platform: Platform, tmp_path: Path, monkeypatch) -> None:
    import orch.cli.service as service_cli

    # The deploy worker is not running in API tests: do its work while the CLI waits.
    monkeypatch.setattr(service_cli.time, "sleep", lambda _s: work(platform))
    root = tmp_path / "api"
    root.mkdir()
    (root / "main.py").write_text("")
    res = cli("service", "deploy", str(root))
    assert res.exit_code == 0, res.output
    assert "api v1 is running at http://localhost:8751/services/team/api/" in res.output
    data = json.loads(cli("service", "status", "api", "--json").output)
    assert list(data)[:4] == ["name", "state", "url", "restarts"]
    assert data["node"] is None  # one machine: no node
    assert (data["name"], data["state"], data["url"], data["restarts"]) == (
        "api",
        "running",
        "http://localhost:8751/services/team/api/",
        0,
    )
    assert [s["name"] for s in json.loads(cli("service", "list", "--json").output)] == ["api"]
    assert "running" in cli("service", "list").output
    assert "state     running" in cli("service", "status", "api").output
    assert cli("service", "logs", "api").exit_code == 0
    assert cli("service", "stop", "api").exit_code == 0
    assert cli("service", "restart", "api").exit_code == 0
    res = cli("service", "delete", "api")
    assert res.exit_code == 2 and "--yes" in res.output
    assert cli("service", "delete", "api", "--yes").exit_code == 0
    res = cli("service", "status", "api")
    assert res.exit_code == 2 and "No service 'api'" in res.output


def test_cli_refuses_a_bad_dockerfile_with_exit_2(cli, tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "main.py").write_text("")
    (root / "Dockerfile").write_text("FROM ubuntu:22.04\n")
    res = cli("service", "deploy", str(root))
    assert res.exit_code == 2, res.output
    assert "✗ The bundle's Dockerfile was rejected (1 error); nothing was deployed." in res.output
    assert "line 1  FROM" in res.output


def test_the_supervisor_sweeps_gone_containers_leftovers_at_start(
    platform: Platform, fake_engine: FakeEngine
) -> None:
    # Found by the faults test: a kill between `podman rm` and removing a container's parent
    # cgroup leaves the cgroup; every start (and every minute after) sweeps this platform's.
    sup = Supervisor(platform, poll=0.05)
    sup.start()
    sup.stop()
    assert fake_engine.swept == [platform.container_prefix]
    assert platform.container_prefix == f"orch-{platform.instance}-"


def test_a_log_started_afresh_is_followed_from_its_start(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """Podman starts a service's log file afresh at its size limit; the supervisor then stores
    what the new file holds, and a follower goes on with it from its offset."""
    svc = deployed(api, platform, tmp_path)
    log = platform.config.home / "logs" / "services" / svc["id"] / f"{svc['container']}.log"
    log.write_text("".join(f"2026-01-01T00:00:00Z stdout F line {i}\n" for i in range(100)))
    assert api.get("/v1/services/web/logs").json()["text"] == ""  # stored at the next pass
    reconcile.reconcile(platform)
    first = api.get("/v1/services/web/logs").json()
    assert first["text"].startswith("line 0\n") and first["text"].endswith("line 99\n")
    log.write_text("2026-01-01T00:00:01Z stdout F after the limit\n")  # what conmon does
    reconcile.reconcile(platform)
    after = api.get("/v1/services/web/logs", params={"offset": first["offset"]}).json()
    assert after["text"] == "after the limit\n"
    assert after["offset"] == first["offset"] + len("after the limit\n")
    assert api.get("/v1/services/web/logs", params={"offset": after["offset"]}).json()["text"] == ""


def test_a_services_output_is_in_the_store_for_any_server(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """What the supervisor stored is answered from the store alone: the machine's files gone
    (another server of the store, on another machine, has none), the output is still there,
    and an ended container's rest is stored when it ends."""
    svc = deployed(api, platform, tmp_path)
    folder = platform.config.home / "logs" / "services" / svc["id"]
    (folder / f"{svc['container']}.log").write_text(
        "2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:00Z stdout P tw"
    )
    reconcile.reconcile(platform)
    (folder / f"{svc['container']}.log").write_text(
        "2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:00Z stdout P tw\n"
        "2026-01-01T00:00:00Z stdout F o\n"
    )
    assert api.post("/v1/services/web/restart").status_code == 200  # the container ends
    shutil.rmtree(folder)
    logs = api.get("/v1/services/web/logs").json()
    assert logs["text"] == "one\ntwo\n" and logs["offset"] == len("one\ntwo\n")


def test_what_a_service_prints_while_it_stops_is_stored(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopped container prints while it shuts down (its SIGTERM handler, during the removal):
    Podman keeps its log file past the removal, and the rest of its output is stored from it
    then (found by a tester: the rest was stored before the stop, and the shutdown's lines lost)."""
    svc = deployed(api, platform, tmp_path)
    log = platform.config.home / "logs" / "services" / svc["id"] / f"{svc['container']}.log"
    log.write_text("2026-01-01T00:00:00Z stdout F serving\n")
    remove = fake_engine.remove_container

    def stopping(name: str, timeout: int = 10) -> None:
        with log.open("a") as f:
            f.write("2026-01-01T00:00:01Z stdout F shutting down\n")
        remove(name, timeout)

    monkeypatch.setattr(fake_engine, "remove_container", stopping)
    assert api.post("/v1/services/web/stop").json()["state"] == "stopped"
    assert api.get("/v1/services/web/logs").json()["text"] == "serving\nshutting down\n"
    assert not log.exists()  # stored, and the file gone


def test_a_deploy_wakes_the_deploy_worker(api: httpx.Client, platform: Platform, tmp_path: Path) -> None:
    platform.wake_deploys.clear()
    assert deploy(api, "web", bundle(tmp_path, {"main.py": ""})).status_code == 201
    assert platform.wake_deploys.is_set()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_deploy_stores_its_bundle_under_the_bundles_lock(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """An agent delete that removes unused bundles holds that lock: it never removes the bundle
    of a deployment between its storing and the commit that refers to it. (SQLite's, one
    machine's file lock; on PostgreSQL the bundle's row is locked: tests/api/test_bundles.py.)"""
    data = bundle(tmp_path, {"main.py": ""})
    sha = hashlib.sha256(data).hexdigest()
    answer: list[httpx.Response] = []
    with bundles.lock(platform):
        t = threading.Thread(target=lambda: answer.append(deploy(api, "web", data)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not answer, "the deploy did not wait for the lock"
        assert not bundles.stored(platform, sha)
    t.join(10)
    assert answer and answer[0].status_code == 201
    assert bundles.stored(platform, sha)


def test_an_unchanged_redeploy_builds_and_restarts_nothing(
    api: httpx.Client, platform: Platform, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    files = {"main.py": "print('hi')\n", "requirements.txt": "six\n"}
    v1 = deployed(api, platform, tmp_path, **files)
    builds, started = len(fake_engine.builds), len(fake_engine.started)
    resp = deploy(api, "web", bundle(tmp_path, files, "again"))
    assert resp.status_code == 200, resp.text
    dep = resp.json()
    assert dep["unchanged"] is True and dep["version"] == 1 and dep["status"] == "ready"
    assert "unchanged, still v1" in dep["notes"][-1]
    work(platform)
    svc = api.get("/v1/services/web").json()
    assert (svc["version"], svc["latest_version"], svc["container"]) == (1, 1, v1["container"])
    assert (len(fake_engine.builds), len(fake_engine.started)) == (builds, started)
    # Anything that makes another service is a new version: the command, public, the code.
    assert deploy(api, "web", bundle(tmp_path, files, "c"), command="python main.py -v").status_code == 201
    work(platform)
    assert api.get("/v1/services/web").json()["version"] == 2
    changed = {**files, "main.py": "print('v3')\n"}
    resp = deploy(api, "web", bundle(tmp_path, changed, "v3"))
    assert resp.status_code == 201 and resp.json()["version"] == 3
    # A stopped service is deployed afresh too, not "unchanged".
    work(platform)
    api.post("/v1/services/web/stop")
    resp = deploy(api, "web", bundle(tmp_path, changed, "v4"))
    assert resp.status_code == 201 and resp.json()["version"] == 4


def test_cli_says_unchanged(cli, platform: Platform, tmp_path: Path, monkeypatch) -> None:
    import orch.cli.service as service_cli

    monkeypatch.setattr(service_cli.time, "sleep", lambda _s: work(platform))
    root = tmp_path / "api"
    root.mkdir()
    (root / "main.py").write_text("")
    assert cli("service", "deploy", str(root)).exit_code == 0
    res = cli("service", "deploy", str(root))
    assert res.exit_code == 0, res.output
    assert "api unchanged, still v1, at http://localhost:8751/services/team/api/" in res.output
    res = cli("service", "deploy", str(root), "--public")
    assert res.exit_code == 0 and "api v2 is running" in res.output and "public" in res.output
    assert (
        "public" in cli("service", "list").output
        and "access    public" in cli("service", "status", "api").output
    )


def test_secrets_asked_for_in_orch_yaml_are_noted_as_not_given(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """Found by a tester: a service's `secrets:` was ignored without a word, and its process read
    None where it expected a token; an `environment:` pin was noted."""
    files = {"main.py": "", "orch.yaml": "name: web\nsecrets: [GH_TOKEN, NPM_TOKEN]\n"}
    resp = deploy(api, "web", bundle(tmp_path, files))
    assert resp.status_code == 201, resp.text
    assert resp.json()["notes"] == [
        "orch.yaml asks for secrets (GH_TOKEN, NPM_TOKEN), which services are not given yet: the "
        "service's process does not have them."
    ]
    work(platform)
    assert api.get("/v1/services/web").json()["state"] == "running"


def test_a_stopped_service_s_restart_answers_once_it_serves(
    api: httpx.Client, platform: Platform, answering: list[bool], tmp_path: Path
) -> None:
    """Found by a tester: `orch service restart` of a stopped service answered "restarted
    (starting)" at once, and the request after it got 503; a running one's restart waits."""
    deployed(api, platform, tmp_path)
    assert api.post("/v1/services/web/stop").json()["state"] == "stopped"
    answering[0] = False  # its new container does not answer yet
    answer: list[httpx.Response] = []
    restart = threading.Thread(target=lambda: answer.append(api.post("/v1/services/web/restart")))
    restart.start()
    restart.join(1)
    assert restart.is_alive() and not answer, "the restart answered before the service served"
    answering[0] = True
    for _ in range(100):  # the supervisor's passes, which ask the new container again
        reconcile.reconcile(platform)
        restart.join(0.1)
        if answer:
            break
    assert answer and answer[0].status_code == 200, answer
    assert answer[0].json()["state"] == "running"


def test_a_stopped_service_whose_start_does_not_serve_is_said(
    api: httpx.Client,
    platform: Platform,
    answering: list[bool],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed(api, platform, tmp_path)
    api.post("/v1/services/web/stop")
    answering[0] = False
    platform.config = platform.config.with_values(service_start_timeout=1)
    monkeypatch.setattr(leases, "LEASE_SECONDS", 0.5)
    resp = api.post("/v1/services/web/restart")
    assert resp.status_code == 503, resp.text
    assert resp.json()["message"] == "web's replica 0 did not serve within 2 s of its start."
    assert api.get("/v1/services/web").json()["desired"] == "running"  # its start goes on
