from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from orch.errors import InvalidInput
from orch.models import new_id
from orch.store import Store
from orch.store.db import MIGRATIONS, Gone, check_url
from orch.store.schema import BuildRow, TokenRow, WorkspaceRow
from tests.postgres import PostgresServer, find_bin


def head() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def test_postgresql_urls_use_psycopg() -> None:
    store = Store("postgresql://orch:secret@127.0.0.1:5432/orch")
    assert store.db.dialect.name == "postgresql"
    assert store.db.dialect.driver == "psycopg"


def test_bad_url_is_a_plain_error() -> None:
    with pytest.raises(InvalidInput, match="is a nosuchdb:// one, and orch keeps its store in SQLite"):
        Store("nosuchdb://x")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        # A database orch does not use was said with the driver SQLAlchemy tried to load
        # ("No module named 'MySQLdb'"), and the URL with its password.
        ("mysql://root:hunter2@db/orch", "The database URL is a mysql:// one"),
        ("orch.db", "The database URL is not a URL"),
        ("postgresql://u:hunter2@db:port/orch", "The database URL's port is not a number."),
    ],
)
def test_a_url_orch_cannot_use_is_said_from_its_scheme_alone(url: str, said: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_url(url)
    assert refused.value.message.startswith(said), refused.value.message
    assert "hunter2" not in str(refused.value) and "module" not in str(refused.value)
    assert refused.value.fix == "Use sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB."


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://u:hunter2@db:port/orch", "The database URL's port is not a number."),
        ("sqlite://u:hunter2@h:1/", "The database URL 'sqlite://u:***@h:1/' can't be read as one."),
    ],
)
def test_a_url_the_store_refuses_is_said_without_its_password(url: str, said: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Store(url)
    assert refused.value.message == said
    assert refused.value.fix == "Use sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB."


def test_a_missing_driver_is_said_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(cls: object) -> None:
        raise ImportError("No module named 'psycopg'")

    monkeypatch.setattr(PGDialect_psycopg, "import_dbapi", classmethod(missing))
    with pytest.raises(InvalidInput) as refused:
        Store("postgres://u:hunter2@db/orch")
    assert refused.value.message == (
        "The database URL 'postgres://u:***@db/orch' is not usable: No module named 'psycopg'."
    )


def test_a_sqlite_url_is_checked_without_making_its_file(tmp_path: Path) -> None:
    check_url(f"sqlite:///{tmp_path}/home/orch.db")  # in memory: refused (test_sqlite_store_url_check)
    assert not (tmp_path / "home").exists()


def test_a_postgresql_server_that_does_not_answer_is_one_sentence(postgres_url: str) -> None:
    check_url(postgres_url)  # one that answers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once it is closed
    with pytest.raises(InvalidInput) as refused:
        check_url(f"postgresql://orch:hunter2@127.0.0.1:{port}/orch")
    said = refused.value.message
    assert said.startswith(
        f"Cannot open the database at postgresql://orch:***@127.0.0.1:{port}/orch: "  # as written
    )
    assert said.endswith("Connection refused.") and "\n" not in said and "hunter2" not in said, said
    assert "Check ORCH_DATABASE_URL" in refused.value.fix


def test_a_sqlite_file_keeps_its_connections_for_as_many_threads_as_use_it(tmp_path: Path) -> None:
    """Sessions of 20 threads at once, then again: the second time opens no connection (the
    default pool kept 5 and opened one for every session beyond them, each time). An in-memory
    database keeps its own pool."""
    from sqlalchemy import event

    store = Store(f"sqlite:///{tmp_path}/orch.db")
    opened: list[object] = []
    event.listen(store.db, "connect", lambda conn, record: opened.append(conn))

    def wave() -> None:
        inside = threading.Barrier(20)

        def session() -> None:
            with store.session() as s:
                s.execute(text("SELECT 1"))
                inside.wait(10)  # all 20 hold a connection at once

        threads = [threading.Thread(target=session) for _ in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)

    wave()
    assert len(opened) == 20
    wave()
    assert len(opened) == 20
    store.dispose()
    assert Store("sqlite://").db.pool.__class__.__name__ == "SingletonThreadPool"


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'deep' / 'orch.db'}")
    store.migrate()
    store.migrate()
    with store.db.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert version == head() and mode == "wal"
    store.dispose()


def test_migrate_an_empty_postgresql_database(postgres_server: PostgresServer) -> None:
    name = postgres_server.create_database(template="template0")
    try:
        store = Store(postgres_server.url(name))
        store.migrate()
        store.migrate()
        with store.db.connect() as conn:
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert version == head()
        store.dispose()
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def store(database_url: str) -> Store:
    s = Store(database_url)
    s.migrate()
    return s


def test_times_come_back_in_utc(store: Store) -> None:
    if store.db.dialect.name == "postgresql":
        # A server or database in another time zone must not shift what orch reads back.
        with store.db.connect() as conn:
            name = conn.exec_driver_sql("SELECT current_database()").scalar()
            conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Kolkata'")
            conn.commit()
        store.dispose()
    elsewhere = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7)))
    with store.session() as s:
        row = WorkspaceRow(id=new_id("ws"), name="team")
        s.add_all([row, WorkspaceRow(id=new_id("ws"), name="late", created_at=elsewhere)])
    with store.session() as s:
        created = s.scalar(select(WorkspaceRow.created_at).where(WorkspaceRow.name == "team"))
        late = s.scalar(select(WorkspaceRow.created_at).where(WorkspaceRow.name == "late"))
    # Every store gives back an aware time in UTC (SQLite keeps no zone of its own), so the API
    # prints the same `...+00:00` from either.
    assert isinstance(created, datetime) and created == row.created_at
    assert created.utcoffset() == timedelta(0) and created.tzinfo == UTC
    assert late == elsewhere and late.tzinfo == UTC
    store.dispose()


def test_output_with_nul_is_stored(store: Store) -> None:
    build = BuildRow(
        id=new_id("bld"), environment_id="env_x", status="failed", cache_key="k", dockerfile_hash="h"
    )
    build.containerfile = ""
    with store.session() as s:
        s.add(build)
    with store.session() as s:
        s.execute(update(BuildRow).where(BuildRow.id == build.id).values(log_tail="a\x00b"))
    with store.session() as s:
        tail = s.scalar(select(BuildRow.log_tail))
    # PostgreSQL refuses NUL in text: there it becomes U+FFFD, as undecodable output does.
    assert tail == ("a\ufffdb" if store.db.dialect.name == "postgresql" else "a\x00b")
    store.dispose()


def test_missing_postgresql_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.postgres.BIN_GLOB", "/nonexistent/postgresql/*/bin")
    with pytest.raises(pytest.fail.Exception, match=r"scripts/setup --dev"):
        find_bin()


def test_sqlite_writers_of_one_server_queue_in_the_process_not_in_sqlites_busy_sleeps(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    store.migrate()
    assert store.writer is not None
    with store.db.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    assert not store.writer.locked()

    # A read takes nothing; a write holds the lock until its transaction ends.
    with store.db.begin() as conn:
        conn.execute(text("SELECT count(*) FROM t"))
        assert not store.writer.locked()
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert store.writer.locked()
    assert not store.writer.locked()

    def failed_request() -> None:
        with store.session() as s:
            s.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("a failed request")

    with pytest.raises(RuntimeError):
        failed_request()
    assert not store.writer.locked()

    # A second writer waits for the first one's commit on the lock: SQLite never sees it busy,
    # even with its own busy wait off (it would fail at once with "database is locked").
    committed = threading.Event()
    seen: list[object] = []

    def second() -> None:
        with store.db.begin() as conn:
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            try:
                conn.execute(text("INSERT INTO t VALUES (3)"))
                seen.append(committed.is_set())
            except Exception as e:
                seen.append(e)

    with store.db.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (4)"))
        other = threading.Thread(target=second)
        other.start()
        other.join(0.3)
        assert other.is_alive()  # waiting
        committed.set()
    other.join(10)
    assert seen == [True]
    with store.db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 3


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """It holds runs' output, --env values and reasons: a new database's directory is 0700 and its
    files (-wal and -shm too) 0600, whatever the umask lets through."""
    import os

    home = tmp_path / "home"
    old = os.umask(0o022)
    try:
        store = Store(f"sqlite:///{home}/orch.db")
        store.migrate()
        with store.session() as s:  # a write: SQLite makes the -wal and -shm files
            s.add(WorkspaceRow(id=new_id("ws"), name="team"))
        files = [home / "orch.db", home / "orch.db-wal", home / "orch.db-shm"]
        assert all(f.exists() for f in files)
        assert [_mode(f) for f in files] == [0o600, 0o600, 0o600] and _mode(home) == 0o700
        store.dispose()
    finally:
        os.umask(old)


def test_an_existing_database_is_made_readable_by_its_owner_only(tmp_path: Path) -> None:
    """An older orch's database (made 0644 under the umask) is tightened when a store opens it,
    as the server does at start; its directory, which the user chose, is left as it is."""
    first = Store(f"sqlite:///{tmp_path}/orch.db")
    first.migrate()
    with first.session() as s:
        s.add(WorkspaceRow(id=new_id("ws"), name="team"))
    files = [tmp_path / "orch.db", tmp_path / "orch.db-wal", tmp_path / "orch.db-shm"]
    for f in files:
        f.chmod(0o644)
    tmp_path.chmod(0o755)
    again = Store(f"sqlite:///{tmp_path}/orch.db")
    assert [_mode(f) for f in files] == [0o600, 0o600, 0o600] and _mode(tmp_path) == 0o755
    with again.session() as s:
        assert s.scalar(select(WorkspaceRow.name)) == "team"
    first.dispose()
    again.dispose()


def test_a_write_that_refers_to_a_row_deleted_meanwhile_is_refused_plainly(store: Store) -> None:
    # A run or token made by a workspace's token in the instant its workspace is deleted: the
    # database refuses the foreign key, and the caller reads a Conflict (409), never a 500.
    with pytest.raises(Gone, match="was deleted at the same moment"), store.session() as s:
        s.add(TokenRow(id=new_id("tok"), workspace_id="ws_gone", name="t", sha256="0" * 64))
    with store.session() as s:
        assert s.scalar(select(TokenRow.id)) is None
    store.dispose()
