"""A PostgreSQL user that may not read, write or create orch's tables is said in one sentence
(its user, its database, what PostgreSQL refused and the fix), exit 2, before `orch server`
makes anything of ORCH_HOME; a user with SELECT, INSERT, UPDATE and DELETE on a migrated
database is enough.

Found by a tester: such a user got "orch failed unexpectedly (ProgrammingError: ... permission
denied for table alembic_version [SQL: ...]) This is a bug", exit 1, once ORCH_HOME and its
server.lock were made."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orch.cli.main import app
from orch.errors import InvalidInput
from orch.store import Store
from orch.store.db import MIGRATIONS, check_url
from tests.postgres import PostgresServer

_names = itertools.count()


@dataclass
class Rights:
    """A database of the throwaway server, and a role of its own that has no rights on it."""

    server: PostgresServer
    database: str
    role: str

    @property
    def url(self) -> str:  # trust authentication on 127.0.0.1: no password needed
        return f"postgresql://{self.role}@127.0.0.1:{self.server.port}/{self.database}"

    def grant(self, *statements: str) -> None:
        import psycopg

        admin_url = self.server.url(self.database)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement.format(role=self.role))


def _rights(server: PostgresServer, template: str) -> Iterator[Rights]:
    n = next(_names)
    role, database = f"lowpriv_{n}", f"rights_{n}"
    with server.admin() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    try:
        yield Rights(server, database, role)
    finally:
        server.drop_database(database)
        with server.admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def migrated(postgres_server: PostgresServer) -> Iterator[Rights]:
    """orch's tables (migrated, owned by the server's superuser), and a role with no rights on them."""
    yield from _rights(postgres_server, "orch_template")


@pytest.fixture
def empty(postgres_server: PostgresServer) -> Iterator[Rights]:
    """A new database owned by the superuser (PostgreSQL 15 and later: nobody else may create
    in its schema public), and a role with no rights on it."""
    yield from _rights(postgres_server, "template0")


def _server(home: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    def platform(*_: object, **__: object) -> None:
        raise AssertionError("the server went on to make its platform")

    monkeypatch.setattr("orch.server.main.machine.platform", platform)
    env = {"ORCH_HOME": str(home), "ORCH_DATABASE_URL": url, "ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0"}
    res = CliRunner().invoke(app, ["server"], env=env)
    return res.exit_code, " ".join(res.output.split())


def test_a_user_without_rights_on_orchs_tables_is_refused_before_the_home_is_made(
    migrated: Rights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    code, said = _server(home, migrated.url, monkeypatch)
    assert code == 2, said
    assert said.startswith(
        f"✗ The PostgreSQL user {migrated.role} may not read orch's tables in the database "
        f"{migrated.database} (postgresql://{migrated.role}@127.0.0.1:"  # as written
    ), said
    assert ": permission denied for table alembic_version." in said, said
    assert f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {migrated.role}" in said
    assert "This is a bug" not in said and "[SQL:" not in said and "sqlalche.me" not in said, said
    assert not home.exists()  # no server.lock, no config.toml


def test_a_user_who_may_read_but_not_write_is_refused_naming_what_it_lacks(
    migrated: Rights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrated.grant("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    home = tmp_path / "home"
    code, said = _server(home, migrated.url, monkeypatch)
    assert code == 2, said
    assert f"The PostgreSQL user {migrated.role} may not write orch's tables" in said, said
    assert "permission denied for table" in said and "(INSERT, UPDATE, DELETE)" in said, said
    assert not home.exists()


def test_a_user_who_may_not_create_tables_in_a_new_database_is_refused_before_the_home_is_made(
    empty: Rights, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    code, said = _server(home, empty.url, monkeypatch)
    assert code == 2, said
    assert said.startswith(
        f"✗ The PostgreSQL user {empty.role} may not create orch's tables in the database {empty.database} "
    ), said
    assert ": permission denied for schema public." in said, said
    assert f"GRANT USAGE, CREATE ON SCHEMA public TO {empty.role}" in said, said
    assert "the database's owner" in said, said
    assert "This is a bug" not in said and "[SQL:" not in said, said
    assert not home.exists()


def _older() -> str:
    """The revision before the newest migration's."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    return str(ScriptDirectory.from_config(cfg).get_revision(head).down_revision)


def test_a_user_who_may_not_upgrade_the_tables_is_refused(migrated: Rights) -> None:
    """A store one migration behind: only the owner of its tables may alter them."""
    migrated.grant(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"UPDATE alembic_version SET version_num = '{_older()}'",
    )
    with pytest.raises(InvalidInput) as refused:
        check_url(migrated.url)
    said = refused.value.message
    assert said.startswith(f"The PostgreSQL user {migrated.role} may not upgrade orch's tables"), said
    assert ": must be owner of table " in said, said
    assert "the owner of the database's tables" in refused.value.fix


@pytest.mark.parametrize(
    ("database", "doing", "refused"),
    [
        ("migrated", "read", "permission denied for table alembic_version"),
        ("empty", "create", "permission denied for schema public"),
    ],
)
def test_migrate_without_the_rights_is_the_same_sentence_not_a_bug(
    request: pytest.FixtureRequest, database: str, doing: str, refused: str
) -> None:
    """`orch node start` and `orch admin` migrate the store themselves (no check first); the URL
    is quoted as written, as check_url quotes it (it was the engine's postgresql+psycopg://)."""
    rights: Rights = request.getfixturevalue(database)
    store = Store(rights.url)
    try:
        with pytest.raises(InvalidInput) as said:
            store.migrate()
    finally:
        store.dispose()
    message = said.value.message
    assert message.startswith(f"The PostgreSQL user {rights.role} may not {doing} orch's tables"), message
    assert message.endswith(f": {refused}."), message
    assert "[SQL:" not in message and "\n" not in message
    assert f"(postgresql://{rights.role}@127.0.0.1:" in message and "+psycopg" not in message, message


def test_a_user_with_only_the_rights_on_the_rows_of_a_migrated_database_passes(migrated: Rights) -> None:
    migrated.grant("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    check_url(migrated.url)  # nothing refused
    store = Store(migrated.url)
    try:
        store.migrate()  # at the newest already: only asked which it is at
    finally:
        store.dispose()
