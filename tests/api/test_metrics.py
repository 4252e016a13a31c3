"""GET /metrics, in-process on the fake engine: the text parses, and each figure moves with what
it counts (docs/metrics.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orch import metrics
from orch.engine.fake import FakeEngine
from orch.errors import BuildFailed
from orch.services import deployed as deployed_use_cases
from orch.services.platform import Platform
from tests.api.test_agents_runs import bundle, publish
from tests.api.test_environments import GOOD
from tests.api.test_services import _Echo, deployed
from tests.conftest import drain, drain_runs, make_platform

MiB = 2**20
FAMILIES = {
    "orch_run_phase_seconds": "histogram",
    "orch_runs_finished": "counter",
    "orch_runs": "gauge",
    "orch_queue_depth": "gauge",
    "orch_sandboxes_open": "gauge",
    "orch_run_memory_bytes": "gauge",
    "orch_runs_waiting_for_memory": "gauge",
    "orch_run_sandbox_starts": "counter",
    "orch_builds": "counter",
    "orch_build_duration_seconds": "histogram",
    "orch_deployments_finished": "counter",
    "orch_proxy_requests": "counter",
    "orch_proxy_request_seconds": "histogram",
}


def scrape(api: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, by (sample name, labels); asked without the workspace token."""
    resp = httpx.Client(transport=api._transport, base_url="http://testserver").get("/metrics")
    assert resp.status_code == 200, resp.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_are_prometheus_text_without_a_token_and_outside_the_schema(api: httpx.Client) -> None:
    resp = httpx.Client(transport=api._transport, base_url="http://testserver").get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f.type for f in text_string_to_metric_families(resp.text)}
    assert families.items() >= FAMILIES.items()
    # Every phase's series exists before its first run, at 0.
    samples = scrape(api)
    for phase in metrics.PHASES:
        assert value(samples, "orch_run_phase_seconds_count", phase=phase) == 0
    assert "/metrics" not in api.get("/openapi.json").json()["paths"]


def test_a_metrics_token_when_set_is_required(api: httpx.Client, platform: Platform) -> None:
    platform.config = platform.config.with_values(metrics_token="scrape-secret")
    anonymous = httpx.Client(transport=api._transport, base_url="http://testserver")
    assert anonymous.get("/metrics").status_code == 401
    # A workspace token is not the metrics token.
    assert api.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = anonymous.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert answer.status_code == 200 and "orch_queue_depth" in answer.text


def test_queue_depth_and_runs_by_status_are_read_from_the_store(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    assert api.post("/v1/environments", json={"name": "one", "dockerfile": GOOD}).status_code == 201
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    assert api.post("/v1/runs", json={"agent": "hello"}).status_code == 201
    assert api.post("/v1/runs", json={"agent": "hello"}).status_code == 201
    before = scrape(api)
    assert value(before, "orch_queue_depth", queue="builds") == 1
    assert value(before, "orch_queue_depth", queue="runs") == 2
    assert value(before, "orch_queue_depth", queue="deployments") == 0
    assert value(before, "orch_runs", status="queued") == 2
    assert value(before, "orch_runs", status="succeeded") == 0

    assert drain_runs(platform) == 2
    drain(platform)
    after = scrape(api)
    assert value(after, "orch_queue_depth", queue="builds") == 0
    assert value(after, "orch_queue_depth", queue="runs") == 0
    assert value(after, "orch_runs", status="queued") == 0
    assert value(after, "orch_runs", status="succeeded") == 2


def test_builds_are_counted_by_outcome_with_their_duration(api: httpx.Client, platform: Platform) -> None:
    api.post("/v1/environments", json={"name": "good", "dockerfile": GOOD})
    broken = "FROM e2bdev/code-interpreter:latest\nRUN exit 1\n"
    api.post("/v1/environments", json={"name": "broken", "dockerfile": broken})
    assert drain(platform) == 2
    samples = scrape(api)
    for outcome in ("ready", "failed"):
        assert value(samples, "orch_builds_total", kind="environment", outcome=outcome) == 1
        assert value(samples, "orch_build_duration_seconds_count", kind="environment", outcome=outcome) == 1
    assert value(samples, "orch_builds_total", kind="service", outcome="ready") == 0


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch, platform: Platform) -> Iterator[None]:
    """A service that answers (tests/api/test_services.py's echo) where the proxy sends it."""
    platform.probe = lambda address, port: True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    monkeypatch.setattr(deployed_use_cases, "PORT", server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()


def test_deployments_and_proxy_requests_are_counted(
    api: httpx.Client, site: httpx.Client, platform: Platform, tmp_path: Path, echo: None
) -> None:
    deployed(api, platform, tmp_path)
    assert site.get("/services/team/web/hello").status_code == 201
    assert site.post("/services/team/web/", content=b"x").status_code == 201
    assert site.get("/services/team/nope/").status_code == 404
    api.post("/v1/services/web/stop")
    assert site.get("/services/team/web/").status_code == 503
    samples = scrape(api)
    assert value(samples, "orch_deployments_finished_total", outcome="ready") == 1
    assert value(samples, "orch_builds_total", kind="service", outcome="ready") == 1
    assert value(samples, "orch_proxy_requests_total", code="2xx") == 2
    assert value(samples, "orch_proxy_requests_total", code="4xx") == 1
    assert value(samples, "orch_proxy_requests_total", code="5xx") == 1
    assert value(samples, "orch_proxy_request_seconds_count") == 4


def test_a_failed_service_build_fails_its_deployment_in_the_counts(
    api: httpx.Client,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise BuildFailed("podman build failed.", "")

    monkeypatch.setattr(fake_engine, "build", refuse)
    deployed(api, platform, tmp_path)
    samples = scrape(api)
    assert value(samples, "orch_builds_total", kind="service", outcome="failed") == 1
    assert value(samples, "orch_deployments_finished_total", outcome="failed") == 1
    assert value(samples, "orch_deployments_finished_total", outcome="ready") == 0


def test_the_run_path_api_moves_its_series(api: httpx.Client, platform: Platform) -> None:
    """What the run path calls (workers/runs.py, sandbox/, server/api/runs.py), through /metrics."""
    m = metrics.of(platform)
    m.phase("queue", 0.012)
    with m.timed("start"):
        pass
    with pytest.raises(RuntimeError), m.timed("prepare"):
        raise RuntimeError("a failed prepare is still time spent")
    m.run_finished("succeeded")
    with m.sandbox_open():
        assert value(scrape(api), "orch_sandboxes_open") == 1
    m.sandbox_opened()
    samples = scrape(api)
    assert value(samples, "orch_sandboxes_open") == 1
    assert value(samples, "orch_run_phase_seconds_count", phase="queue") == 1
    assert value(samples, "orch_run_phase_seconds_bucket", phase="queue", le="0.01") == 0
    assert value(samples, "orch_run_phase_seconds_bucket", phase="queue", le="0.02") == 1
    assert value(samples, "orch_run_phase_seconds_count", phase="start") == 1
    assert value(samples, "orch_run_phase_seconds_count", phase="prepare") == 1
    assert value(samples, "orch_runs_finished_total", status="succeeded") == 1
    assert value(samples, "orch_runs_finished_total", status="failed") == 0
    with pytest.raises(ValueError, match="phase"):
        m.phase("boot", 1.0)  # type: ignore[arg-type]  # what a typo would send
    with pytest.raises(ValueError, match="final"):
        m.run_finished("running")


def test_each_platform_has_its_own_metrics(
    tmp_path: Path, fake_engine: FakeEngine, platform: Platform
) -> None:
    other = make_platform(tmp_path / "other", fake_engine, database_url=f"sqlite:///{tmp_path / 'other.db'}")
    try:
        metrics.of(platform).run_finished("failed")
        assert metrics.of(platform) is metrics.of(platform)
        assert metrics.of(other) is not metrics.of(platform)
        assert b'orch_runs_finished_total{status="failed"} 0.0' in metrics.of(other).render()
    finally:
        other.store.dispose()


def test_a_run_moves_every_phase_and_the_finished_count(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"}))
    assert api.post("/v1/runs", json={"agent": "hello"}).status_code == 201
    drain_runs(platform)
    samples = scrape(api)
    assert value(samples, "orch_runs_finished_total", status="succeeded") == 1
    for phase in metrics.PHASES:
        assert value(samples, "orch_run_phase_seconds_count", phase=phase) == 1, phase
    assert value(samples, "orch_sandboxes_open") == 0


def test_a_cache_hit_is_counted(api: httpx.Client, platform: Platform) -> None:
    api.post("/v1/environments", json={"name": "one", "dockerfile": GOOD})
    drain(platform)
    api.post("/v1/environments", json={"name": "two", "dockerfile": GOOD})
    assert value(scrape(api), "orch_builds_total", kind="environment", outcome="cache-hit") == 1


def test_a_refused_run_request_is_no_runs_api_phase_and_no_created_series(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    """docs/metrics.md: one observation per run and phase. A refused POST (no such agent, a bad
    timeout) made no run, and counted in the api phase all the same."""
    publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')"}))
    assert api.post("/v1/runs", json={"agent": "nope"}).status_code == 404
    assert api.post("/v1/runs", json={"agent": "hello", "timeout": 0}).status_code == 400
    assert api.post("/v1/runs", json={"agent": "hello"}).status_code == 201
    samples = scrape(api)
    assert value(samples, "orch_run_phase_seconds_count", phase="api") == 1
    assert not [name for name, _ in samples if name.endswith("_created")]
