"""A SQLite store the server can't keep its data in is refused before anything is made
(docs/configuration.md, ORCH_DATABASE_URL): an in-memory database, a path under a file or
where no directory can be made, a directory, and a database (or its directory) on a file
system mounted read-only. Each was "This is a bug" (exit 1) or a traceback once the server
said it had started (exit 3), after ORCH_HOME's config.toml, secret.key and directories were
made."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orch.cli.main import app
from orch.errors import InvalidInput
from orch.store import Store
from orch.store.db import check_url

IN_MEMORY = "names an in-memory SQLite database, and orch keeps its store in a file."
FIX = "Point ORCH_DATABASE_URL (or --db) at a file in a directory the server's user may write"


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A directory on a file system of its own, mounted read-only (root may write a 0444 file
    or directory, not this), holding a migrated store `orch.db`."""
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        store = Store(f"sqlite:///{mount / 'orch.db'}")
        store.migrate()
        store.dispose()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _bad(tmp_path: Path, read_only: Path | None = None) -> list[tuple[str, str]]:
    (tmp_path / "afile").write_text("")
    cases = [
        ("sqlite://", f"The database URL 'sqlite://' {IN_MEMORY}"),
        ("sqlite:///", f"The database URL 'sqlite:///' {IN_MEMORY}"),
        ("sqlite:///:memory:", f"The database URL 'sqlite:///:memory:' {IN_MEMORY}"),
        (
            f"sqlite:///{tmp_path}/afile/x.db",
            f"The database {tmp_path}/afile/x.db can't be made: {tmp_path}/afile is a file, not a directory.",
        ),
        (
            "sqlite:////proc/nope/x.db",
            "The database /proc/nope/x.db can't be made: the server can't write in /proc "
            "(No such file or directory).",
        ),
        (f"sqlite:///{tmp_path}", f"The database {tmp_path} is a directory, not a SQLite file."),
    ]
    if read_only is not None:
        cases += [
            (
                f"sqlite:///{read_only}/orch.db",
                f"The server can't write the database {read_only}/orch.db: Read-only file system.",
            ),
            (
                f"sqlite:///{read_only}/new/orch.db",
                f"The database {read_only}/new/orch.db can't be made: the server can't write in "
                f"{read_only} (Read-only file system).",
            ),
        ]
    return cases


def test_a_sqlite_store_orch_cannot_keep_is_one_sentence_with_the_fix(
    tmp_path: Path, read_only: Path
) -> None:
    for url, said in _bad(tmp_path, read_only):
        before = sorted(tmp_path.rglob("*"))
        with pytest.raises(InvalidInput) as refused:
            check_url(url)
        assert refused.value.message == said, url
        assert "\n" not in said
        assert refused.value.fix.startswith(FIX if "in-memory" not in said else "Use sqlite:///PATH"), url
        assert sorted(tmp_path.rglob("*")) == before, url  # the check made nothing


def test_a_sqlite_store_the_server_may_make_is_checked_without_making_it(tmp_path: Path) -> None:
    check_url(f"sqlite:///{tmp_path}/home/deep/orch.db")  # made with the home
    store = Store(f"sqlite:///{tmp_path}/orch.db")
    store.migrate()
    store.dispose()
    before = sorted(tmp_path.iterdir())
    check_url(f"sqlite:///{tmp_path}/orch.db")  # an existing one it may write
    assert sorted(tmp_path.iterdir()) == before  # no probe left behind
    assert not (tmp_path / "home").exists()


def test_orch_server_refuses_such_a_store_before_it_makes_anything(
    tmp_path: Path, read_only: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def platform(*_: object, **__: object) -> None:
        raise AssertionError("the server went on to make its platform")

    monkeypatch.setattr("orch.server.main.machine.platform", platform)
    # A home that is there, with the CLI's config of an earlier start (its token kept, the
    # server went on to say it had started), and one still to be made.
    there = tmp_path / "there"
    there.mkdir()
    (there / "config.toml").write_text('url = "http://127.0.0.1:8750"\ntoken = "orch_x"\n')
    (tmp_path / "urls").mkdir()
    for home in (there, tmp_path / "home"):
        for url, said in _bad(tmp_path / "urls", read_only):
            before = sorted(home.rglob("*")) if home.exists() else None
            for how in (["--db", url], []):
                env = {"ORCH_HOME": str(home), "ORCH_PORT": "0", "ORCH_SERVICES_PORT": "0"}
                if not how:
                    env["ORCH_DATABASE_URL"] = url
                res = CliRunner().invoke(app, ["server", *how], env=env)
                assert res.exit_code == 2, (url, res.output, res.exception)
                assert res.output.startswith(f"✗ {said}"), res.output
                assert "This is a bug" not in res.output and "Traceback" not in res.output
                assert "orch server on" not in res.output
                if before is None:
                    assert not home.exists(), url  # no config.toml, secret.key, server.lock
                else:
                    assert sorted(home.rglob("*")) == before, url
