"""Connecting, migrating and opening sessions."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import URL, create_engine, event, make_url, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from orch.config import make_home
from orch.errors import Conflict, InvalidInput, OrchError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_POOL = 48  # connections kept open to a SQLite database; more are opened while needed


class Store:
    """One database: SQLite file (WAL) by default, PostgreSQL by URL."""

    def __init__(self, url: str) -> None:
        given, url = url, engine_url(url)
        self.url = url
        # SQLAlchemy's engine, called `db` here: in orch, "engine" is the container engine.
        # A pre-ping finds a PostgreSQL connection the server closed; a SQLite file has none to
        # lose, and the ping would be one more statement per session.
        sqlite = url.startswith("sqlite")
        # A SQLite connection is a file handle in this process: the pool keeps as many as the
        # server's threads use at once (run workers, the API's thread pool), where the default
        # 5 closes every connection beyond them when it is given back and opens a new one for
        # the next session (its pragmas run, its prepared statements lost): in a burst of runs,
        # one new connection every few runs. A PostgreSQL connection is a server process: the
        # default stands.
        try:
            in_file = sqlite and make_url(url).database not in (None, "", ":memory:")
            pool = {"pool_size": SQLITE_POOL, "max_overflow": -1} if in_file else {}
            self.db: Engine = create_engine(url, future=True, pool_pre_ping=not sqlite, **pool)
        except ValueError:  # int() of the port
            raise InvalidInput("The database URL's port is not a number.", URL_FIX) from None
        except (ArgumentError, ImportError) as e:
            # Never with its password: the URL as given, with the password hidden, when it can be read.
            shown = "The database URL"
            with suppress(ArgumentError, ValueError):
                shown += f" {make_url(given).render_as_string(hide_password=True)!r}"
            if isinstance(e, ArgumentError):
                raise InvalidInput(f"{shown} can't be read as one.", URL_FIX) from None
            raise InvalidInput(f"{shown} is not usable: {e}.", URL_FIX) from None
        # SQLite's writers, one at a time, queue on this lock of the process (see _one_writer).
        self.writer: threading.Lock | None = None
        if self.db.dialect.name == "sqlite":
            if in_file:
                private_file(Path(self.db.url.database or ""))
            event.listen(self.db, "connect", _sqlite_pragmas)
            self.writer = _one_writer(self.db)
        elif self.db.dialect.name == "postgresql":
            event.listen(self.db, "connect", _postgresql_utc)
        self._sessions = sessionmaker(self.db, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest migration."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.db.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as e:
            raise OrchError(
                f"Cannot open the database {self.db.url.render_as_string()}: {e.orig}.",
                "Check ORCH_DATABASE_URL and that the database server is running.",
            ) from None

    @contextmanager
    def session(self, clash: Conflict | None = None) -> Iterator[Session]:
        """A session that commits on success and rolls back on error.

        A write that breaks a unique key (a name, a number) raises `clash`, or a Clash when none
        is given, never the database's error (an HTTP 500): a create checks that its name is free
        first, but another request may take the name between that check and the insert. A create
        passes the Conflict it raises when its check finds the name taken, so that the caller of
        the one that lost the race reads the same sentence as the caller of a later duplicate.

        A write that refers to a row deleted meanwhile (a run made by a token of a workspace
        deleted in the same instant) raises Gone, never the database's error either."""
        try:
            with self._sessions() as s, s.begin():
                yield s
        except IntegrityError as e:
            if _foreign_key(e):
                raise Gone() from None
            if not _unique_key(e):
                raise
            raise (clash or Clash()) from None

    def dispose(self) -> None:
        self.db.dispose()


# The stores orch opens, by their URL's scheme, and the SQLAlchemy URL's scheme for each: the
# SQLite file, or PostgreSQL through psycopg 3, the driver orch ships with (a plain
# postgresql:// URL means it).
SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
URL_FIX = "Use sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB."
CONNECT_TIMEOUT = 10  # seconds a start waits for a PostgreSQL server to answer


def engine_url(url: str) -> str:
    """The SQLAlchemy URL of the store at `url`. InvalidInput for a URL of a database, or of a
    driver, orch does not use: said from its scheme alone (no driver is loaded, nothing is made),
    and without the rest of the URL, which may hold a password."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidInput("The database URL is not a URL: it has no scheme such as sqlite://.", URL_FIX)
    if scheme not in SCHEMES:
        raise InvalidInput(
            f"The database URL is a {scheme}:// one, and orch keeps its store in SQLite or PostgreSQL only.",
            URL_FIX,
        )
    return f"{SCHEMES[scheme]}://{rest}"


def dialect(url: str) -> str:
    """The database of the store at `url`: sqlite or postgresql (InvalidInput as engine_url)."""
    return engine_url(url).partition("://")[0].partition("+")[0]


def check_url(url: str) -> None:
    """InvalidInput unless the store at `url` is one orch can open, found without making anything
    (a server checks its setting before it makes its home): its scheme is SQLite's or
    PostgreSQL's, a SQLite store is a file the server may write (check_sqlite_file), and a
    PostgreSQL server answers there. A SQLite file is made with the home."""
    try:
        parsed = make_url(engine_url(url))
    except ValueError:  # int() of the port
        raise InvalidInput("The database URL's port is not a number.", URL_FIX) from None
    except ArgumentError:
        raise InvalidInput("The database URL can't be read as one.", URL_FIX) from None
    if parsed.get_backend_name() == "sqlite":
        check_sqlite_file(parsed, url)
        return
    shown = parsed.render_as_string(hide_password=True)
    timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT}
    probe = create_engine(parsed, poolclass=NullPool, connect_args=timeout)
    try:
        with probe.connect():
            pass
    except OperationalError as e:
        raise InvalidInput(
            f"Cannot open the database at {shown}: {_first_line(e.orig)}.",
            "Check ORCH_DATABASE_URL (or --db): its PostgreSQL server must run, answer this machine, "
            "and know its user, password and database.",
        ) from None
    finally:
        probe.dispose()


SQLITE_FIX = (
    "Point ORCH_DATABASE_URL (or --db) at a file in a directory the server's user may write, "
    "e.g. sqlite:////var/lib/orch/orch.db."
)


def check_sqlite_file(url: URL, given: str) -> None:
    """InvalidInput unless the SQLite database at `url` (its path; `given` as set) is a file the
    server can make, or open to write: not an in-memory database (each connection would have
    its own, empty, and all of it would end with the server), not a directory, not under a file,
    and in a directory the server may write (SQLite makes its -wal and -shm files there) on a
    file system mounted read-write. Said before anything is made: a directory still missing
    is tried by making and removing a directory of its own in the nearest one that exists."""
    database = url.database
    if database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        shown = given if url.password is None else url.render_as_string(hide_password=True)
        raise InvalidInput(
            f"The database URL {shown!r} names an in-memory SQLite database, "
            "and orch keeps its store in a file.",
            "Use sqlite:///PATH with the path of a file (the default is $ORCH_HOME/orch.db), "
            "or postgresql://USER:PASSWORD@HOST/DB.",
        )
    if database is None or database.startswith("file:"):  # a URI (?uri=true): SQLite reads it, as it says
        return
    path = Path(os.path.abspath(database))
    if path.exists() and not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise InvalidInput(f"The database {path} is {what}, not a SQLite file.", SQLITE_FIX)
    if path.exists():
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as e:
            raise InvalidInput(
                f"The server can't write the database {path}: {e.strerror}.", SQLITE_FIX
            ) from None
    where = path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise InvalidInput(
            f"The database {path} can't be made: {where} is a file, not a directory.", SQLITE_FIX
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".orch-check-", dir=where))
    except OSError as e:
        raise InvalidInput(
            f"The database {path} can't be {'written' if path.exists() else 'made'}: "
            f"the server can't write in {where} ({e.strerror}).",
            SQLITE_FIX,
        ) from None


def _first_line(error: BaseException | None) -> str:
    """What a driver's error says, as one clause: psycopg's first line, without its prefix
    ("connection failed: ") and its hint on the next lines."""
    said = str(error or "it did not answer").strip().splitlines()[0]
    for prefix in ("connection failed: ", "connection is bad: "):
        said = said.removeprefix(prefix)
    return said.rstrip(".")


class Clash(Conflict):
    """A write broke a unique key: another request made the same row at the same moment (HTTP
    409). A use case that may simply go again (an upsert, a publish) catches it and does."""

    def __init__(self) -> None:
        super().__init__(
            "Another request changed the same thing at the same moment, so this one was not made.",
            "Look at what is there now, then send the request again if it is still needed.",
        )


def hold(s: Session, model: Any, row_id: str, shared: bool = False) -> None:
    """Lock the row `row_id` of `model` (a table with an `id`) until the session ends, on either
    store: what the transaction reads after this includes every write committed before it, and
    another transaction that holds or writes the row waits for this one. For a check-then-act on
    a row that a concurrent request acts on too (deleting an environment while another request
    makes it the workspace default): call it before the check. On PostgreSQL it is a row lock
    (FOR UPDATE); SQLite has only its one writer at a time, which this takes now rather than at
    the transaction's first write (its reads before that would see a state already gone).

    `shared`: only against a delete (or another whole hold) of the row, for a write that refers
    to it without a foreign key; other shared holds and writes that refer to it by one go on (on
    PostgreSQL FOR SHARE; on SQLite the same as a whole hold)."""
    hold_all(s, model, model.id == row_id, shared=shared)


def hold_all(s: Session, model: Any, where: Any, shared: bool = False) -> None:
    """`hold` every row of `model` that `where` selects: for a check over several rows (the
    platform's admin tokens, counted before one of them goes)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(model.id).where(where).with_for_update(read=shared))
    else:
        s.execute(update(model).where(where).values(id=model.id))


class Gone(Conflict):
    """A write referred to a row that another request deleted at the same moment: its
    workspace, agent or environment (HTTP 409)."""

    def __init__(self) -> None:
        super().__init__(
            "What this request refers to (its workspace, agent or environment) was deleted at the "
            "same moment, so nothing was made.",
            "Check that it still exists (`orch workspace list`, `orch agents list`, `orch env list`).",
        )


def _foreign_key(e: IntegrityError) -> bool:
    """Whether `e` is a foreign key's violation, on either store."""
    if getattr(e.orig, "sqlstate", None) == "23503":  # psycopg: foreign_key_violation
        return True
    return str(e.orig).startswith("FOREIGN KEY constraint failed")  # sqlite3


def _unique_key(e: IntegrityError) -> bool:
    """Whether `e` is a unique key's (or a primary key's) violation, on either store."""
    if getattr(e.orig, "sqlstate", None) == "23505":  # psycopg: unique_violation
        return True
    return str(e.orig).startswith("UNIQUE constraint failed")  # sqlite3


def private_file(path: Path) -> None:
    """Keep a SQLite database readable by its owner only: it holds runs' output, their --env
    values and reasons. Its directory, when the store makes it, is made 0700; the file is made
    0600 before SQLite first opens it, and SQLite gives its -wal and -shm files the database's
    mode. An existing database's files (an older orch's, made under the umask: 0644) are made
    0600 at each start; one the server may not change is said in its log."""
    make_home(path.parent)
    with suppress(FileExistsError):  # made 0600 whatever the umask: it can only take bits away
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if each.stat().st_mode & 0o077:
                each.chmod(0o600)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("Cannot make %s readable by its owner only (%s): other users may read it.", each, e)


def _postgresql_utc(dbapi_conn: Any, _record: Any) -> None:
    # PostgreSQL hands timestamps back in the session's time zone, which is the server's unless
    # set: always UTC, as on SQLite, whatever the server or the database is configured with.
    # Outside a transaction, so that the pool's first rollback does not undo it.
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    dbapi_conn.execute("SET TIME ZONE 'UTC'")
    dbapi_conn.autocommit = autocommit


# SQLite takes one writer at a time, and a writer that finds the lock taken sleeps in its busy
# handler (1, 2, 5, 10... up to 100 ms between tries), not woken when the lock frees: under load,
# runs and requests slept there more than they worked. The server's own writers queue on a lock
# of the process instead, each woken as the one before commits; the busy handler stays for
# writers of other processes. Held from a transaction's first write to its end.
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
WAIT = 10.0  # seconds, as busy_timeout: then the write goes on and SQLite's own wait decides


def _one_writer(db: Engine) -> threading.Lock:
    lock = threading.Lock()
    dialect = db.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        info = conn.info
        if "writing" not in info and statement.lstrip()[:7].upper().startswith(WRITES):
            info["writing"] = lock.acquire(timeout=WAIT)

    def done(connection: Any) -> None:
        try:
            info = connection.info
        except (AttributeError, NotImplementedError):  # the dialect's first look, outside the pool
            return
        if info.pop("writing", False):
            lock.release()

    # Let go once SQLite has let go: after the COMMIT or ROLLBACK itself (SQLAlchemy's commit
    # and rollback events come before it). A connection given back to the pool in the middle
    # of a transaction is rolled back through the same method.
    def do_commit(connection: Any) -> None:
        try:
            commit(connection)
        finally:
            done(connection)

    def do_rollback(connection: Any) -> None:
        try:
            rollback(connection)
        finally:
            done(connection)

    event.listen(db, "before_cursor_execute", before)
    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]
    return lock


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # In WAL mode, NORMAL syncs the log at checkpoints rather than at every commit: a killed
    # server loses nothing, a power cut may lose the last commits but never the database's
    # consistency (docs/configuration.md). Per connection, like busy_timeout.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
