"""Connecting, migrating and opening sessions."""

from __future__ import annotations

import functools
import getpass
import logging
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicError
from sqlalchemy import URL, create_engine, event, inspect, make_url, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import NullPool

from orch.config import make_home
from orch.errors import (
    Conflict,
    InvalidInput,
    OrchError,
    StoreBusy,
    StoreFull,
    StoreUnavailable,
    store_trouble,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_POOL = 48  # connections kept open to a SQLite database; more are opened while needed


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    """orch's migrations, read once per process."""
    return ScriptDirectory.from_config(_alembic_config())


def _newest() -> str | None:
    """The newest migration's revision."""
    return _scripts().get_current_head()


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except AlembicError:
        return False


class Store:
    """One database: SQLite file (WAL) by default, PostgreSQL by URL."""

    def __init__(self, url: str) -> None:
        given, url = url, engine_url(url)
        self.url = url
        self._scheme = given.partition("://")[0]  # as written: postgresql://, not the engine's
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
        """Bring the schema to the newest migration (a store there already is only asked which
        it is at: Alembic reads every migration's file to plan an upgrade)."""
        cfg = _alembic_config()
        current: object = _UNREAD
        try:
            with self.db.begin() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
                if current == _newest():
                    return
                others = check_schema(conn, self.shown, current)
                if others:
                    log.warning(
                        "The database %s already holds tables that are not orch's (%s): orch makes its "
                        "own beside them. A database of orch's own is what docs/configuration.md asks for.",
                        self.shown,
                        named(others),
                    )
                log.info("migrating the store from %s to revision %s", current or "nothing", _newest())
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            log.info("migrated the store to revision %s", _newest())
        except OperationalError as e:
            raise OrchError(
                f"Cannot open the database {self.shown}: {e.orig}.",
                "Check ORCH_DATABASE_URL and that the database server is running.",
            ) from None
        except ProgrammingError as e:
            # A PostgreSQL user without the rights (`orch node start`, `orch admin`: the server
            # checks them first, check_rights): said as check_url says it, not as a bug.
            if getattr(e.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise
            doing = "read" if current is _UNREAD else "create" if current is None else "upgrade"
            raise no_rights(self.written, _user(self.db.url), doing, first_line(e.orig)) from None

    @contextmanager
    def session(self, clash: Conflict | None = None) -> Iterator[Session]:
        """A session that commits on success and rolls back on error.

        A write that breaks a unique key (a name, a number) raises `clash`, or a Clash when none
        is given, never the database's error (an HTTP 500): a create checks that its name is free
        first, but another request may take the name between that check and the insert. A create
        passes the Conflict it raises when its check finds the name taken, so that the caller of
        the one that lost the race reads the same sentence as the caller of a later duplicate.

        A write that refers to a row deleted meanwhile (a run made by a token of a workspace
        deleted in the same instant) raises Gone, never the database's error either; so does a
        change of a row read in the session that another request deleted since (the ORM's
        StaleDataError: its UPDATE or DELETE found no row)."""
        try:
            with self._sessions() as s, s.begin():
                yield s
        except StaleDataError:
            raise Gone() from None
        except IntegrityError as e:
            if _foreign_key(e):
                raise Gone() from None
            if not _unique_key(e):
                raise
            raise (clash or Clash()) from None

    def dispose(self) -> None:
        self.db.dispose()

    @property
    def written(self) -> URL:
        """The store's URL with its scheme as the operator wrote it (postgresql://), not as the
        engine reads it (postgresql+psycopg://)."""
        return self.db.url.set(drivername=self._scheme)

    @property
    def shown(self) -> str:
        """The store's URL as messages and logs name it: as written, never with its password."""
        return self.written.render_as_string(hide_password=True)

    def trouble(self, exc: BaseException) -> StoreFull | StoreUnavailable | StoreBusy | None:
        """The 503 that `exc` means if it is this store's trouble, not a bug: its disk full, the
        store not answering (named by its kind), or busy; else None (errors.store_trouble)."""
        return store_trouble(exc, self.db.dialect.name)


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
    database, plus, _driver = scheme.partition("+")
    if scheme not in SCHEMES and plus and database in ("postgresql", "postgres"):
        raise InvalidInput(  # PostgreSQL all the same, through another driver
            f"The database URL is a {scheme}:// one: orch talks to PostgreSQL through psycopg (3), "
            "the driver it ships with, and no other.",
            "Write it as postgresql://USER:PASSWORD@HOST/DB (or postgresql+psycopg://…).",
        )
    if scheme not in SCHEMES:
        raise InvalidInput(
            f"The database URL is a {scheme}:// one, and orch keeps its store in SQLite or PostgreSQL only.",
            URL_FIX,
        )
    return f"{SCHEMES[scheme]}://{rest}"


def check_schema(conn: Connection, shown: str, current: str | None) -> list[str]:
    """InvalidInput unless the database of `conn` (named `shown`; `current`, its Alembic
    revision) is orch's store or may become it: a revision of orch's shape (`00NN`) newer than
    this orch's is a newer orch's, any other revision it does not know is another application's,
    and a database without a revision that holds tables of orch's names is another application's
    too (orch's first migration would fail on them). Else the tables of a database orch has not
    migrated yet that are not orch's (another application's, which orch's tables would join)."""
    from orch.store.schema import Base

    if current is not None:
        if _known(current):
            return []
        if re.fullmatch(r"\d{4}", current) and current > str(_newest()):
            raise InvalidInput(  # a newer orch's migration: going back is not possible
                f"The database {shown} was migrated by a newer orch: its schema is at "
                f"revision {current}, and this orch knows revisions up to {_newest()}.",
                "Run the orch version that migrated it (or a newer one); to go back to this "
                "version, restore the database from a copy made before the upgrade.",
            )
        raise InvalidInput(
            f"The database {shown} holds another application's schema (its Alembic revision "
            f"{current} is not orch's).",
            OWN_DATABASE,
        )
    tables = sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
    clashing = [t for t in tables if t in Base.metadata.tables]
    if clashing:
        raise InvalidInput(
            f"The database {shown} already holds tables named as orch's ({named(clashing)}) "
            "and no revision of orch's: they are another application's, and orch's would clash with them.",
            OWN_DATABASE,
        )
    return tables


OWN_DATABASE = (
    "Give orch a database of its own: create an empty one and point ORCH_DATABASE_URL at it "
    "(docs/configuration.md)."
)
NAMED = 5  # tables a sentence names, before "and N more"


def named(tables: list[str]) -> str:
    """`tables` as a sentence names them: up to NAMED, then how many more."""
    more = f" and {len(tables) - NAMED} more" if len(tables) > NAMED else ""
    return ", ".join(tables[:NAMED]) + more


def _revision_readable(conn: Connection) -> bool:
    """Whether the PostgreSQL user of `conn` may read the database's Alembic revision, when it
    has one (a user that may not is said by check_rights)."""
    readable = conn.scalar(text("SELECT has_table_privilege(to_regclass('alembic_version'), 'SELECT')"))
    return readable is not False  # NULL: no such table


def dialect(url: str) -> str:
    """The database of the store at `url`: sqlite or postgresql (InvalidInput as engine_url)."""
    return engine_url(url).partition("://")[0].partition("+")[0]


def check_url(url: str) -> None:
    """InvalidInput unless the store at `url` is one orch can open, found without making anything
    (a server checks its setting before it makes its home): its scheme is SQLite's or
    PostgreSQL's, a SQLite store is a file the server may write (check_sqlite_file), and a
    PostgreSQL server answers there, with a user that has the rights orch needs (check_rights).
    A database that is not orch's store and may not become it is refused too (check_schema).
    A SQLite file is made with the home."""
    try:
        parsed = make_url(engine_url(url))
    except ValueError:  # int() of the port
        raise InvalidInput("The database URL's port is not a number.", URL_FIX) from None
    except ArgumentError:
        raise InvalidInput("The database URL can't be read as one.", URL_FIX) from None
    # As the operator wrote it (postgresql://, not the engine's postgresql+psycopg://), no password.
    written = parsed.set(drivername=url.partition("://")[0])
    shown = written.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        check_sqlite_file(parsed, url)
        check_sqlite_schema(parsed, shown)
        return
    timeout = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT}
    try:
        probe = create_engine(parsed, poolclass=NullPool, connect_args=timeout)
    except ArgumentError as e:  # an option of the query SQLAlchemy reads itself (?port=abc)
        raise InvalidInput(f"The database URL {shown} can't be read as one: {e}.", URL_FIX) from None
    try:
        with _connect(probe, parsed, shown) as conn:  # only read, and rolled back
            if _revision_readable(conn):
                check_schema(conn, shown, MigrationContext.configure(conn).get_current_revision())
            refused = check_rights(conn)
    except OperationalError as e:
        raise InvalidInput(
            f"Cannot open the database at {shown}: {first_line(e.orig)}.",
            "Check ORCH_DATABASE_URL (or --db): its PostgreSQL server must run, answer this machine, "
            "and know its user, password and database.",
        ) from None
    finally:
        probe.dispose()
    if refused is not None:
        raise no_rights(written, *refused, setting="ORCH_DATABASE_URL (or --db)")


def _connect(probe: Engine, url: URL, shown: str) -> Connection:
    """A connection of `probe`, or InvalidInput when psycopg refuses an option of the query of
    `url` (named `shown`) before it connects: one it does not know (?bogus=1), or a value it
    can't read (?connect_timeout=abc)."""
    try:
        return probe.connect()
    except ProgrammingError as e:
        said = first_line(e.orig)
        option = next((name for name in url.query if name in said), None)
        raise InvalidInput(
            f"The database URL {shown} has an option psycopg refuses{f' ({option})' if option else ''}: "
            f"{said}.",
            f"Correct the option{f' {option}' if option else ''} in ORCH_DATABASE_URL (or --db), "
            "or remove it: the URL's options are libpq's connection parameters "
            "(https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS).",
        ) from None


def check_sqlite_schema(url: URL, shown: str) -> None:
    """check_schema for the SQLite file of `url`, when there is one, read without making or
    changing anything: opened immutable, so SQLite makes no -wal or -shm file beside it. A
    file it can't read so (not a database, or written at that moment) is left to the
    migration, which says what it finds."""
    path = Path(os.path.abspath(url.database or ""))
    if url.database is None or url.database.startswith("file:") or not path.is_file():
        return
    uri = f"{path.as_uri()}?immutable=1"
    probe = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool)
    try:
        with probe.connect() as conn:
            check_schema(conn, shown, MigrationContext.configure(conn).get_current_revision())
    except DBAPIError:
        return
    finally:
        probe.dispose()


INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE for a right its user lacks
ROW_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE")  # what a server does to a migrated store's rows
_UNREAD = object()  # Store.migrate: the store's revision, not read yet


def check_rights(conn: Connection) -> tuple[str, str, str, str] | None:
    """What the PostgreSQL user of `conn` may not do that `orch server` would do to orch's tables:
    (its user, read/write/create/upgrade, what PostgreSQL says when it refuses, its schema), or
    None. Found from the catalog's privileges, without making anything: a store at the newest
    migration needs SELECT, INSERT, UPDATE and DELETE on each of orch's tables (the rights of a
    user its owner granted them to); a new one, CREATE on the schema its tables are made in; an
    older one, the tables' owner (a migration alters them) and CREATE on their schema."""
    from orch.store.schema import Base

    user, schema = "", "public"
    try:
        user, schema, known = conn.execute(
            text("SELECT current_user, current_schema(), to_regclass('alembic_version') IS NOT NULL")
        ).one()
        if schema is None:  # no schema of its search_path exists, or it may use none of them
            return user, "create", "no schema has been selected to create in", "public"
        create = conn.scalar(text("SELECT has_schema_privilege(current_schema(), 'CREATE')"))
        if not known:
            return None if create else (user, "create", f"permission denied for schema {schema}", schema)
        if not conn.scalar(text("SELECT has_table_privilege('alembic_version', 'SELECT')")):
            return user, "read", "permission denied for table alembic_version", schema
        tables = ["alembic_version", *Base.metadata.tables]
        if conn.scalar(text("SELECT version_num FROM alembic_version")) == _newest():
            lacking = conn.execute(
                text(
                    "SELECT t, r FROM unnest(CAST(:tables AS text[])) t, unnest(CAST(:rights AS text[])) r "
                    "WHERE to_regclass(t) IS NOT NULL AND NOT has_table_privilege(to_regclass(t), r)"
                ),
                {"tables": tables[1:], "rights": list(ROW_RIGHTS)},
            ).all()
            for table in tables[1:]:
                rights = [r for t, r in lacking if t == table]
                if rights:
                    said = f"permission denied for table {table} ({', '.join(rights)})"
                    return user, "read" if "SELECT" in rights else "write", said, schema
            return None
        not_owned = conn.scalars(
            text(
                "SELECT t FROM unnest(CAST(:tables AS text[])) t JOIN pg_class c ON c.oid = to_regclass(t) "
                "WHERE NOT pg_has_role(c.relowner, 'USAGE')"
            ),
            {"tables": tables},
        ).all()
        if not_owned:
            return user, "upgrade", f"must be owner of table {sorted(not_owned, key=tables.index)[0]}", schema
        return None if create else (user, "upgrade", f"permission denied for schema {schema}", schema)
    except ProgrammingError as e:  # a right the catalog did not tell
        if getattr(e.orig, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
            raise
        return user or _user(conn.engine.url), "read", first_line(e.orig), schema or "public"


def no_rights(
    url: URL, user: str, doing: str, said: str, schema: str = "public", setting: str = "ORCH_DATABASE_URL"
) -> InvalidInput:
    """The sentence for a PostgreSQL user that may not `doing` (check_rights) orch's tables of
    the store at `url`, with what PostgreSQL `said` (its first line, not its SQL) and the fix."""
    who = user if re.fullmatch(r"[a-z_][a-z0-9_$]*", user) else '"' + user.replace('"', '""') + '"'
    owner = f"or set {setting} to the database's owner"
    if doing == "create":
        fix = f"Grant {user} CREATE on its schema (GRANT USAGE, CREATE ON SCHEMA {schema} TO {who}), {owner}."
    elif doing == "upgrade":
        fix = (
            f"Start orch once with {setting} set to the owner of the database's tables (it upgrades "
            f"them); then {user}, with SELECT, INSERT, UPDATE and DELETE on them, can use them."
        )
    else:
        fix = (
            f"Grant {user} the rights on the database's tables (as their owner: GRANT SELECT, INSERT, "
            f"UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {who}), {owner}."
        )
    return InvalidInput(
        f"The PostgreSQL user {user} may not {doing} orch's tables in the database {url.database} "
        f"({url.render_as_string(hide_password=True)}): {said}.",
        fix,
    )


def _user(url: URL) -> str:
    """The user a PostgreSQL URL connects as: its own, else libpq's default."""
    return url.username or os.environ.get("PGUSER") or getpass.getuser()


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


def first_line(error: BaseException | None) -> str:
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
