"""A database that is not orch's store, and a URL psycopg refuses, said in one sentence with the
fix, exit 2, before `orch server` makes anything (docs/configuration.md); and a start that
migrates the store says so in the server's log.

Found by an operator tester on PostgreSQL: another application's database with an Alembic
revision of its own was "migrated by a newer orch" (run a newer orch, or restore the database),
once ORCH_HOME and its server.lock were made; one with a table named as one of orch's was "orch
failed unexpectedly (ProgrammingError ... CREATE TABLE workspaces ...) This is a bug", exit 1;
so were `?connect_timeout=abc` and `?bogus=1`; a `postgresql+psycopg2://` URL was "not SQLite or
PostgreSQL"; and the migration's two lines never reached the server's log (they were said
before its logging was set up)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from typer.testing import CliRunner

from orch import config, log_setup
from orch.cli.main import app
from orch.engine.fake import FakeEngine
from orch.errors import InvalidInput
from orch.server import main
from orch.services.platform import Platform
from orch.store import Store
from orch.store.db import check_url
from tests.postgres import PostgresServer

OtherApp = tuple[str, psycopg.Connection[tuple[object, ...]]]  # its URL, and a connection to it
OWN_DATABASE = "Give orch a database of its own: create an empty one and point ORCH_DATABASE_URL at it"


@pytest.fixture
def other_app(
    postgres_server: PostgresServer,
) -> Iterator[OtherApp]:
    """An empty database of no one's (not orch's template), its URL and a connection to add
    another application's tables to it."""
    name = postgres_server.create_database("template0")
    url = postgres_server.url(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            yield url, conn
    finally:
        postgres_server.drop_database(name)


def _server(home: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`orch server` on the store at `url`: its exit code and what it said, on one line."""

    def platform(*_: object, **__: object) -> None:
        raise AssertionError("the server went on to make its platform")

    monkeypatch.setattr("orch.server.main.machine.platform", platform)
    env = {"ORCH_HOME": str(home), "ORCH_DATABASE_URL": url, "ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0"}
    res = CliRunner().invoke(app, ["server"], env=env)
    return res.exit_code, " ".join(res.output.split())


def test_another_apps_alembic_database_is_not_a_newer_orchs(
    other_app: OtherApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, conn = other_app
    conn.execute("CREATE TABLE users (id int)")
    conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    conn.execute("INSERT INTO alembic_version VALUES ('abc123def')")
    home = tmp_path / "home"
    code, said = _server(home, url, monkeypatch)
    assert code == 2, said
    assert "holds another application's schema (its Alembic revision abc123def is not orch's)." in said, said
    assert OWN_DATABASE in said and "newer orch" not in said and "restore" not in said, said
    assert not home.exists()  # no server.lock, as the URL check's other refusals
    store = Store(url)  # `orch node start` migrates it itself: the same sentence
    try:
        with pytest.raises(InvalidInput, match="holds another application's schema"):
            store.migrate()
    finally:
        store.dispose()
    # A revision of orch's shape, newer than this orch's, is still a newer orch's.
    conn.execute("UPDATE alembic_version SET version_num = '0999'")
    code, said = _server(home, url, monkeypatch)
    assert code == 2 and "was migrated by a newer orch" in said and "0999" in said, said
    assert not home.exists()


def test_a_sqlite_file_of_another_app_is_refused_before_the_home_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('abc123def')")
    home = tmp_path / "home"
    code, said = _server(home, f"sqlite:///{path}", monkeypatch)
    assert code == 2 and "(its Alembic revision abc123def is not orch's)" in said, said
    assert not home.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, no -shm


def test_a_database_with_tables_named_as_orchs_is_refused_before_migrating(
    other_app: OtherApp,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, conn = other_app
    conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
    conn.execute("CREATE TABLE workspaces (id text)")
    home = tmp_path / "home"
    code, said = _server(home, url, monkeypatch)
    assert code == 2, said
    assert "already holds tables named as orch's (workspaces) and no revision of orch's" in said, said
    assert OWN_DATABASE in said and "bug" not in said and "CREATE TABLE" not in said, said
    assert not home.exists()
    tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"users", "workspaces"}


def test_a_database_with_other_tables_is_used_and_said_once_in_the_log(
    other_app: OtherApp, caplog: pytest.LogCaptureFixture
) -> None:
    url, conn = other_app
    for n in range(7):
        conn.execute(f"CREATE TABLE customers_{n} (id int)")
    check_url(url)  # not refused
    store = Store(url)
    try:
        with caplog.at_level(logging.INFO, logger="orch.store.db"):
            store.migrate()
            store.migrate()  # orch's store now: nothing more to say
    finally:
        store.dispose()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, warned
    assert "already holds tables that are not orch's (customers_0, customers_1, customers_2, " in warned[0]
    assert "customers_4 and 2 more)" in warned[0], warned


@pytest.mark.parametrize(
    ("query", "said"),
    [
        (
            "connect_timeout=abc",
            "psycopg refuses (connect_timeout): bad value for connect_timeout: 'abc'.",
        ),
        ("bogus=1", 'psycopg refuses (bogus): invalid connection option "bogus".'),
    ],
)
def test_an_option_psycopg_refuses_is_one_sentence(
    postgres_url: str, query: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_url(f"{postgres_url}?{query}")
    assert said in refused.value.message, refused.value.message
    option = query.partition("=")[0]
    assert refused.value.fix.startswith(
        f"Correct the option {option} in ORCH_DATABASE_URL (or --db), or remove it"
    )
    home = tmp_path / "home"
    code, out = _server(home, f"{postgres_url}?{query}", monkeypatch)
    assert code == 2 and said in out and "bug" not in out, out
    assert not home.exists()


def test_a_postgresql_url_of_another_driver_says_orch_uses_psycopg() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_url("postgresql+psycopg2://u:hunter2@db/orch")
    assert refused.value.message == (
        "The database URL is a postgresql+psycopg2:// one: orch talks to PostgreSQL through "
        "psycopg (3), the driver it ships with, and no other."
    )
    assert refused.value.fix == "Write it as postgresql://USER:PASSWORD@HOST/DB (or postgresql+psycopg://…)."


@contextlib.contextmanager
def a_fresh_process_logging() -> Iterator[None]:
    """The root logger as a new process has it (no handler, WARNING), for the server's start to
    set up; the test run's put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in log_setup.QUIET}
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, was in quiet.items():
            logging.getLogger(name).setLevel(was)


def test_the_servers_log_says_the_stores_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server's start up to uvicorn's on an empty store, with the machine's platform on a fake
    container engine and uvicorn's server faked: its log is its standard error."""
    made: list[Platform] = []

    def platform(cfg: config.Config) -> Platform:
        made.append(Platform(cfg, Store(cfg.database_url), FakeEngine()))
        return made[-1]

    monkeypatch.setattr(main.machine, "platform", platform)
    monkeypatch.setattr(main, "freeze_startup", lambda: 0)
    monkeypatch.setattr(main, "raise_open_files", lambda: None)
    monkeypatch.setattr(main, "_Server", lambda config, platform: SimpleNamespace(run=lambda sockets: None))
    cfg = config.load(tmp_path / "home", environ={"ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0"})
    try:
        with a_fresh_process_logging():
            main.serve(cfg)
    finally:
        for each in made:
            each.store.dispose()
    err = capsys.readouterr().err.splitlines()
    migration = [line for line in err if "the store" in line]
    assert len(migration) == 2, err
    assert migration[0].startswith("INFO orch.store.db: migrating the store from nothing to revision 00"), err
    assert migration[1].startswith("INFO orch.store.db: migrated the store to revision 00"), err
    assert not [line for line in err if "alembic" in line], err  # its own steps are not the log's
