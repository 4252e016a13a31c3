"""The one exception tree of orch.

    OrchError                  message + fix; exit code 1, HTTP 500 unless a subclass says otherwise
    ├── InvalidInput           bad usage or input: exit 2, HTTP 400
    │   ├── InvalidDockerfile  carries the validator's findings (HTTP 422)
    │   ├── NotFound           an id or name that does not exist: exit 2, HTTP 404
    │   ├── Conflict           the request clashes with the current state: exit 2, HTTP 409
    │   ├── LimitReached       the workspace already holds as much as it may (sandboxes): HTTP 429
    │   └── TooLarge           a request body past its bound: HTTP 413
    ├── Unauthorized           missing or wrong token: exit 2, HTTP 401
    ├── Forbidden              a valid token that may not do this (admin only): exit 2, HTTP 403
    ├── EngineError            the container engine failed: exit 1, HTTP 502
    │   └── BuildFailed        a build step exited non-zero, or the build was stopped
    ├── ServiceUnavailable     a service is not running, or did not answer the proxy: HTTP 503
    ├── CapacityReached        the server's sandboxes hold all the memory they may: HTTP 503, Retry-After
    ├── StoreFull              the store's disk (or database) is full: HTTP 503 (`store_full` tells it)
    ├── StoreUnavailable       the store does not answer (its server down or out of reach): HTTP 503
    ├── StoreBusy              the store busy past a request's wait (a lock, a deadlock): HTTP 503
    ├── ClientGone             the caller went away before the answer (nobody reads it): HTTP 499
    ├── RunFailed              a run could not start (its reason is recorded on the run)
    ├── InstallFailed          a run's dependencies (requirements.txt, package.json) did not install
    ├── DeployFailed           a service's new version was not deployed (the old one serves on)
    ├── HostCheckFailed        this machine lacks a piece that sandboxes, builds or services need
    ├── IllegalTransition      a status change the transition tables forbid: a bug in orch
    └── ServerUnreachable      the CLI cannot reach the server: exit 1

Lower layers raise these; `cli/` turns them into exit codes and `server/` into HTTP answers,
each in one place. Every class has its own `code`, which the server sends and the CLI reads
back into the same class (`from_dict`).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any


class OrchError(Exception):
    """An error with a plain message and a fix that a user can act on."""

    exit_code = 1
    http_status = 500
    code = "error"
    retry_after: int | None = None  # seconds, sent as HTTP's Retry-After

    def __init__(self, message: str, fix: str = "", **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} {self.fix}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "fix": self.fix, **self.details}


class InvalidInput(OrchError):
    exit_code = 2
    http_status = 400
    code = "invalid_input"


class InvalidDockerfile(InvalidInput):
    http_status = 422
    code = "invalid_dockerfile"


class NotFound(InvalidInput):
    http_status = 404
    code = "not_found"


class Conflict(InvalidInput):
    http_status = 409
    code = "conflict"


class LimitReached(InvalidInput):
    """A limit of the workspace's (open sandboxes, commands at once) is reached: try again later."""

    http_status = 429
    code = "limit_reached"


class TooLarge(InvalidInput):
    """A request's body is larger than the server reads for it (server/body_limit.py)."""

    http_status = 413
    code = "too_large"


class Unauthorized(OrchError):
    exit_code = 2
    http_status = 401
    code = "unauthorized"


class Forbidden(OrchError):
    exit_code = 2
    http_status = 403
    code = "forbidden"


class EngineError(OrchError):
    http_status = 502
    code = "engine_error"


class BuildFailed(EngineError):
    """A build step exited non-zero, or the build was stopped (timeout)."""

    code = "build_failed"


class ServiceUnavailable(OrchError):
    """The service exists but is not running, or did not answer the proxy."""

    http_status = 503
    code = "service_unavailable"


class CapacityReached(OrchError):
    """What the server may hold at once is held (the sandboxes' memory, `run_memory`): a moment
    later it may not be."""

    http_status = 503
    code = "capacity_reached"
    retry_after = 5


class StoreFull(OrchError):
    """The store refused a write because its disk (or database) is full: the machine's trouble,
    not a bug, and not the caller's."""

    http_status = 503
    code = "store_full"


# How each store says its disk is full: SQLite's SQLITE_FULL (13, "database or disk is full"),
# PostgreSQL's SQLSTATE 53100 (disk_full), and the system's ENOSPC.
_SQLITE_FULL = 13
_PG_DISK_FULL = "53100"


def store_full(exc: BaseException) -> StoreFull | None:
    """The StoreFull that `exc` (a store's error, as SQLAlchemy wraps it, or an OSError) means,
    if it says that the disk under the store is full; else None."""
    for e in _chain(exc):
        if (
            (isinstance(e, OSError) and e.errno == errno.ENOSPC)
            or getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL
            or getattr(e, "sqlstate", None) == _PG_DISK_FULL
            or getattr(e, "pgcode", None) == _PG_DISK_FULL
            or (type(e).__module__.startswith("sqlite3") and "database or disk is full" in str(e))
        ):
            return StoreFull(
                "The store's disk is full: the server cannot record anything until it has room.",
                "Free space on the disk where the store lives (ORCH_HOME's orch.db, or the "
                "PostgreSQL server's data directory), then try again.",
            )
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every error behind it, each once: SQLAlchemy's wrapped driver error (`orig`),
    its cause and its context."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)  # SQLAlchemy's wrapper of the driver's error
        todo += [orig if isinstance(orig, BaseException) else None, e.__cause__, e.__context__]


class StoreUnavailable(OrchError):
    """The store does not answer: its PostgreSQL server is down, restarting or out of this
    machine's reach (a SQLite file that can't be opened): the machine's trouble, not a bug, and
    not the caller's (`store_unavailable` tells it)."""

    http_status = 503
    code = "store_unavailable"
    retry_after = 5


# How a store says that it does not answer, as its driver's OperationalError: psycopg's without
# a SQLSTATE (raised by the client: the connection refused, lost or closed), PostgreSQL's class 08
# (connection_exception), its shutdown, crash and start (57P01-57P03) and "too many clients"
# (53300); SQLite's file that can't be opened. Any other OperationalError (a SQLite "no such
# table", a lock's timeout) is not this: a bug's 500 as before.
_PG_AWAY = ("08", "57P01", "57P02", "57P03", "53300")
_SQLITE_AWAY = "unable to open database file"


def store_silent(exc: BaseException) -> BaseException | None:
    """The driver's error (or SQLAlchemy's, for a connection it found lost) in `exc`'s chain that
    says that the store does not answer; None if there is none (any other error)."""
    for e in _chain(exc):
        operational = any(c.__name__ == "OperationalError" for c in type(e).__mro__)
        module = type(e).__module__
        if operational and module.startswith("psycopg"):
            sqlstate = getattr(e, "sqlstate", None)
            if sqlstate is None or str(sqlstate).startswith(_PG_AWAY):
                return e
        if operational and module.startswith("sqlite3") and str(e).startswith(_SQLITE_AWAY):
            return e
        if getattr(e, "connection_invalidated", False) is True:  # SQLAlchemy: a disconnect
            return e
    return None


# SQLite says a statement orch got wrong (no such table or column, a syntax error) as an
# OperationalError, code SQLITE_ERROR (1), where PostgreSQL says a ProgrammingError: a bug, not
# the store refusing. An error made by hand (a test's) has no code: its words tell.
_SQLITE_ERROR = 1
_SQLITE_BUGS = ("no such ", "syntax error", "has no column")


def store_refused(exc: BaseException) -> BaseException | None:
    """The error in `exc`'s chain that says that the store refused for a while (the driver's, or
    SQLAlchemy's when it has none): it does not answer (`store_silent`), its disk is full, it is
    busy (a locked SQLite, a PostgreSQL deadlock or serialization failure): any OperationalError
    but SQLite's word for a bug. What orch's workers ask again (docs/architecture.md "A store
    that does not answer"); None for any other error, a bug's."""
    if (silent := store_silent(exc)) is not None:
        return silent
    found: BaseException | None = None
    for e in _chain(exc):
        if not any(c.__name__ == "OperationalError" for c in type(e).__mro__):
            continue
        if type(e).__module__.startswith("sqlite3"):
            code = getattr(e, "sqlite_errorcode", None)
            if code == _SQLITE_ERROR or (code is None and any(w in str(e) for w in _SQLITE_BUGS)):
                return None
        if found is None or type(found).__module__.startswith("sqlalchemy"):
            found = e
    return found


def store_unavailable(exc: BaseException, kind: str = "") -> StoreUnavailable | None:
    """The StoreUnavailable that `exc` (a store's error, as SQLAlchemy wraps it) means if it says
    that the store does not answer (`store_silent`), naming the store's `kind` (`sqlite`,
    `postgresql`): not its address, which is the operator's business, not every caller's (the
    server's log names it); else None. A full store is `store_full`'s: ask it first."""
    if store_silent(exc) is None:
        return None
    what, where = (
        ("SQLite file", "check that the server may open its file")
        if kind.startswith("sqlite")
        else (
            "PostgreSQL database",
            "check that its PostgreSQL server runs and that the server's machine reaches it",
        )
    )
    return StoreUnavailable(
        f"The server's store (its {what}) does not answer: the server can neither read nor record "
        "anything until it does.",
        f"Try again once it answers; if it does not soon, {where} (ORCH_DATABASE_URL).",
    )


class StoreBusy(OrchError):
    """The store refused for a moment (`store_busy` tells it): another write held it longer than
    a request waits (SQLite's busy wait, 10 s), or PostgreSQL ended this request's transaction to
    break a deadlock or a serialization conflict. Not a bug; asking again is the fix."""

    http_status = 503
    code = "store_busy"
    retry_after = 1


# A store busy for a moment: SQLite's SQLITE_BUSY and SQLITE_LOCKED (the primary code, the low byte
# of an extended one); PostgreSQL's serialization_failure, deadlock_detected, lock_not_available.
_SQLITE_BUSY = (5, 6)
_PG_BUSY = ("40001", "40P01", "55P03")


def store_busy(exc: BaseException) -> StoreBusy | None:
    """The StoreBusy that `exc` means if the store said it was busy (its lock held past a
    request's wait, a deadlock, a serialization conflict); else None."""
    for e in _chain(exc):
        code = getattr(e, "sqlite_errorcode", None)
        if (
            (isinstance(code, int) and code & 0xFF in _SQLITE_BUSY)
            or (code is None and type(e).__module__.startswith("sqlite3") and "is locked" in str(e))
            or getattr(e, "sqlstate", None) in _PG_BUSY
        ):
            return StoreBusy(
                "The server's store is busy: other writes held it longer than this request could wait.",
                "Try again in a moment.",
            )
    return None


def store_trouble(exc: BaseException, kind: str = "") -> StoreFull | StoreUnavailable | StoreBusy | None:
    """What `exc` means if it is the store's trouble, not a bug (each a 503 with its fix): its
    disk full, the store not answering (named by its `kind`), or busy past a request's wait;
    else None."""
    return store_full(exc) or store_unavailable(exc, kind) or store_busy(exc)


class ClientGone(OrchError):
    """The caller went away before the answer (a sandbox's create it cancelled): what the request
    made is undone, and the answer goes nowhere (499, as nginx logs a client that left)."""

    http_status = 499
    code = "client_gone"


class RunFailed(OrchError):
    """The run could not start: its reason is recorded and shown to the user."""

    code = "run_failed"


class InstallFailed(OrchError):
    """Installing a run's dependency files (requirements.txt, package.json) failed."""

    code = "install_failed"


class DeployFailed(OrchError):
    """A service's new version did not build or did not answer; the previous one serves on."""

    code = "deploy_failed"


class HostCheckFailed(OrchError):
    """This machine lacks something that sandboxes, builds or services need."""

    code = "host_check_failed"


class IllegalTransition(OrchError):
    """A status change that models' transition tables forbid: a bug in orch, never the user's."""

    code = "illegal_transition"


class ServerUnreachable(OrchError):
    """The CLI cannot reach the server. `never_sent`: no connection was made, so the request never
    reached it (a create that failed so made nothing, and has nothing to undo)."""

    code = "server_unreachable"
    never_sent = False


_BY_CODE: dict[str, type[OrchError]] = {
    cls.code: cls
    for cls in (
        OrchError,
        InvalidInput,
        InvalidDockerfile,
        NotFound,
        Conflict,
        LimitReached,
        TooLarge,
        Unauthorized,
        Forbidden,
        EngineError,
        BuildFailed,
        ServiceUnavailable,
        CapacityReached,
        StoreFull,
        StoreUnavailable,
        StoreBusy,
        ClientGone,
        RunFailed,
        InstallFailed,
        DeployFailed,
        HostCheckFailed,
        IllegalTransition,
        ServerUnreachable,
    )
}


def from_dict(data: dict[str, Any]) -> OrchError:
    """Rebuild an error sent by the server (the inverse of `OrchError.to_dict`)."""
    cls = _BY_CODE.get(str(data.get("error")), OrchError)
    details = {k: v for k, v in data.items() if k not in {"error", "message", "fix"}}
    return cls(
        str(data.get("message", "The server reported an error.")),
        str(data.get("fix", "")),
        **details,
    )
