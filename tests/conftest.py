"""Fixtures shared by every tier: a platform on a temporary ORCH_HOME, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch import config
from orch.builder import base_images
from orch.config import make_home
from orch.engine.base import Engine
from orch.engine.fake import FakeEngine
from orch.services import build_output, deployed_logs, workspaces
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store import Store
from orch.workers import build_queue, builds
from tests.postgres import postgres_server, postgres_url  # noqa: F401 - shared fixtures

# Every test that uses the store (through `platform` or `database_url`) runs on both.
DATABASES = ["sqlite", "postgresql"]


def make_platform(home: Path, engine: Engine, **settings: object) -> Platform:
    cfg = config.load(home, environ={}).with_values(**settings)
    store = Store(cfg.database_url)
    store.migrate()
    platform = Platform(cfg, store, engine)
    envs.seed_builtins(platform)
    return platform


def close_platform(platform: Platform) -> None:
    """What a test's platform holds let go: the services' log files it read (as a server's stop
    lets go of them), the store's connections."""
    deployed_logs.keep_only(platform, set())
    platform.store.dispose()


@pytest.fixture
def fake_engine() -> FakeEngine:
    engine = FakeEngine()
    for r in base_images.RECIPES:
        engine.add_image(base_images.image_tag(r.name), base_images.labels(r.name))
    return engine


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of this test's own: a SQLite file, or a migrated PostgreSQL database."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'home' / 'orch.db'}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated once for this test process, as tests/postgres.py's template is on
    PostgreSQL: migrating every test's file from scratch took most of a platform's setup. The
    migrations still run here, on SQLite, and test_store migrates an empty file from scratch."""
    path = tmp_path_factory.mktemp("sqlite-template") / "orch.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.dispose()
    return path


def copy_sqlite(template: Path, path: Path) -> None:
    """The store at `path` made a copy of `template` (SQLite's backup: whole, whatever its log
    holds), its directory and file private as the store makes them."""
    make_home(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    source, copy = sqlite3.connect(template), sqlite3.connect(path)
    with contextlib.closing(source), contextlib.closing(copy):
        source.backup(copy)


@pytest.fixture
def platform(
    tmp_path: Path, fake_engine: FakeEngine, database_url: str, request: pytest.FixtureRequest
) -> Iterator[Platform]:
    if database_url.startswith("sqlite:///"):
        copy_sqlite(request.getfixturevalue("sqlite_template"), Path(database_url.removeprefix("sqlite:///")))
    p = make_platform(tmp_path / "home", fake_engine, database_url=database_url)
    yield p
    close_platform(p)


@pytest.fixture
def workspace(platform: Platform) -> tuple[str, str]:
    """(workspace id, token) of a fresh workspace."""
    with platform.store.session() as s:
        ws, token = workspaces.create_workspace(s, "team")
        return ws.id, token


def build_log(platform: Platform, build_id: str) -> str:
    """A build's whole log, as stored."""
    with platform.store.session() as s:
        return build_output.read(s, build_id, 0, build_output.MAX_LOG * 2)[0].decode()


def drain(platform: Platform) -> int:
    """Run every queued build now, in this thread; return how many ran."""
    n = 0
    while (build_id := builds.claim(platform)) is not None:
        builds.run(platform, build_id)
        n += 1
    return n


def drain_runs(platform: Platform) -> int:
    """Run every queued run now, in this thread (builds they wait for included)."""
    from orch.workers import runs as run_worker

    workers = build_queue(platform, poll=0.05)  # a run may wait for its environment's build
    workers.start()
    try:
        n = 0
        while (run_id := run_worker.claim(platform)) is not None:
            run_worker.execute(platform, run_id)
            n += 1
        return n
    finally:
        workers.stop()


# The longest modules first: pytest-xdist hands modules out in this order (`--dist loadscope
# --no-loadscope-reorder`, scripts/test; its default would put the modules of most tests first),
# so each starts at once and the many short ones fill the gaps, rather than one long module
# running alone at the end.
LONGEST_FIRST = (  # measured with --durations=0 in CI (2026-12-07), longest first
    "tests/faults/test_random_kills.py",
    "tests/integration/test_services.py",
    "tests/integration/test_cluster.py",
    "tests/integration/test_environments.py",
    "tests/integration/test_runs.py",
    "tests/integration/test_sandboxes.py",
    "tests/api/test_sandboxes.py",
    "tests/security/test_hostile_loop.py",
    "tests/api/test_schemathesis.py",
    "tests/e2e/test_ui.py",
    "tests/integration/test_two_servers.py",
    "tests/e2e/test_ui_live.py",
    "tests/security/test_hostile_exec.py",
    "tests/integration/test_registry.py",
    "tests/security/test_hostile.py",
    "tests/load/test_load.py",
    "tests/integration/test_services_traffic.py",
    "tests/integration/test_fresh_machine.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::")[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A test that leaves an event loop marked running in its thread fails here, by name: every
    later `asyncio.run` in that test process would fail ("cannot be called from a running event
    loop") and take the blame. A module's browser (tests/e2e) holds one until its last test."""
    result = yield
    leaked = asyncio.events._get_running_loop()
    browsing = "browser" in item.fixturenames and nextitem is not None and nextitem.module is item.module  # type: ignore[attr-defined]
    if leaked is not None and not browsing:
        asyncio.events._set_running_loop(None)
        pytest.fail(f"{item.nodeid} left an event loop marked running: {leaked!r}", pytrace=False)
    return result


@pytest.fixture
def sigint() -> Iterator[None]:
    """Ctrl-C as on a terminal (Python's handler: a handler an earlier test left in the process
    swallowed the signal, and a follow waited for it until the test's timeout), put back as it
    was after the test."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
