"""A throwaway PostgreSQL server for the store and API tests, and a fresh database per test.

The server is Debian's PostgreSQL (installed by `scripts/setup --dev`), started from its own
binaries on a cluster in memory (/dev/shm; else in the temporary directory): the system cluster
and service are never used, so a test run needs nothing running beforehand and leaves nothing
behind. It listens on
127.0.0.1 only, on a free port, with trust authentication (loopback, throwaway data).

A run that is killed cannot stop its server or remove its cluster: each cluster's directory
names the process that made it (`owner`), and the next run stops and removes the clusters whose
owner is gone (`sweep`).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from orch.store import Store

BIN_GLOB = "/usr/lib/postgresql/*/bin"
OS_USER = "postgres"  # PostgreSQL refuses to run as root
TEMPLATE = "orch_template"
PREFIX = "orch-pg-"  # the clusters' directories, in the temporary directory
OWNER = "owner"  # in a cluster's directory: the pid of the process that made it
UNOWNED_AGE = 3600  # seconds: a directory without an owner file this old is a leftover
# Where the clusters live: in memory when the machine has a tmpfs for it. Every test creates and
# drops a database (about a thousand files each); on this kind of machine's disk (ext4, mounted
# with `discard`) one took about 0.35 s, in memory about 15 ms.
MEMORY = Path("/dev/shm")


def root() -> Path:
    """The directory the clusters are made in: ORCH_TEST_POSTGRES_DIR when set (a test of the
    sweep), else /dev/shm when it is a writable directory, else the temporary directory."""
    if chosen := os.environ.get("ORCH_TEST_POSTGRES_DIR"):
        return Path(chosen)
    if MEMORY.is_dir() and os.access(MEMORY, os.W_OK | os.X_OK):
        return MEMORY
    return Path(tempfile.gettempdir())


def find_bin() -> Path:
    """The newest installed server's bin directory; fails (never skips) when there is none."""
    found = [Path(p) for p in glob.glob(BIN_GLOB) if (Path(p) / "initdb").exists()]
    if not found:
        pytest.fail(
            f"PostgreSQL server binaries are missing (no {BIN_GLOB}/initdb): the store and API "
            "tests also run on PostgreSQL. Install them with `scripts/setup --dev`.",
            pytrace=False,
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bin: Path
    dir: Path
    port: int = field(default_factory=_free_port)
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def sockets(self) -> Path:
        return self.dir / "sockets"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql://{OS_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        # As root, the server's own tools run as the postgres user; as anyone else, as themselves.
        prefix = ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}{log}")

    def start(self) -> None:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam(OS_USER)
            for path in (self.dir, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            OS_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        # fsync and synchronous commits off: the data is thrown away, and every test creates and
        # drops a database, which would otherwise wait on the disk each time.
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.sockets}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                # Each database made from the template writes it to the log: bounded, in memory.
                "-c max_wal_size=128MB",
                "-c min_wal_size=32MB",
                # Not UTC, so that every test shows orch reads times back in UTC all the same.
                "-c timezone=Asia/Kolkata",
            ]
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create_database(self, template: str = TEMPLATE) -> str:
        """A new, empty-of-data database copied from `template`; its name."""
        name = f"test_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed half-way may have left a connection open.
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 while inside, with a migrated template database; its
    cluster removed after (the tests' fixture, and bench/control_plane.py)."""
    binaries = find_bin()
    sweep(binaries)
    server = PostgresServer(binaries, Path(tempfile.mkdtemp(prefix=PREFIX, dir=root())))
    (server.dir / OWNER).write_text(str(os.getpid()))
    try:
        server.start()
        # Migrating once into a template and copying it per test is much faster than migrating
        # every test's database; the migrations themselves still run here, on PostgreSQL, and
        # test_store migrates an empty database from scratch.
        with server.admin() as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
        store = Store(server.url(TEMPLATE))
        store.migrate()
        store.dispose()  # a template being copied must have no session open
        yield server
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def sweep(binaries: Path, where: Path | None = None) -> list[Path]:
    """Stop the servers of and remove the clusters left by killed test runs: those whose owner
    process is gone (or, without an owner file, made over an hour ago). Return what it removed."""
    removed = []
    for d in (where or root()).glob(f"{PREFIX}*"):
        try:
            owner: int | None = int((d / OWNER).read_text())
        except (OSError, ValueError):
            owner = None
        if owner is not None and _alive(owner):
            continue
        with contextlib.suppress(OSError):
            if owner is None and time.time() - d.stat().st_mtime < UNOWNED_AGE:
                continue  # another run's, before it wrote its owner
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            PostgresServer(binaries, d).stop()
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for this test session, with a migrated template database."""
    with running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, migrated database of its own for this test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
