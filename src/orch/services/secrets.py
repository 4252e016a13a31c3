"""Workspace secrets: set, list and delete them, and hand a run the ones its agent asks for.

Values are encrypted before they reach the store (secret/box.py) and are decrypted only for a
run's sandbox (`resolve`); no answer, log line or record holds one. See docs/secrets.md."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from orch.config import Config
from orch.errors import Conflict, NotFound, OrchError, RunFailed
from orch.models import new_id
from orch.secret import box
from orch.secret.names import MAX_SECRETS, check_name, check_value
from orch.services.platform import Platform
from orch.services.views import SecretView
from orch.store.db import Clash, hold
from orch.store.schema import SecretRow, WorkspaceRow, utcnow

log = logging.getLogger(__name__)

# The most a run's secrets may hold together: a sandbox's environment (and the command line) must
# fit in what the kernel hands a new process (2 MiB with the usual 8 MiB stack).
MAX_RUN_BYTES = 1024 * 1024


def prepare(platform: Platform) -> None:
    """At start: make the key file if the platform has no key yet, and warn (by count, in the
    server's log) of stored secrets that this key cannot open, such as after a new key file."""
    key = box.load(platform.config, create=True)
    with platform.store.session() as s:
        rows = s.execute(select(SecretRow.workspace_id, SecretRow.name, SecretRow.ciphertext)).all()
    unreadable = 0
    for workspace_id, name, ciphertext in rows:
        try:
            key.open(workspace_id, name, ciphertext)
        except (box.Unreadable, UnicodeDecodeError):
            unreadable += 1
    if unreadable:
        log.warning(
            "%d of %d stored secrets cannot be decrypted with this server's secret key (%s): runs "
            "that need them will fail until the key they were set with is back, or they are set again",
            unreadable,
            len(rows),
            key.origin,
        )


def set_secret(platform: Platform, ws_id: str, name: str, value: str) -> SecretView:
    """Create the secret `name`, or replace its value; nothing changes on refusal."""
    check_name(name)
    check_value(value)
    try:
        key = box.load(platform.config)  # made at start (prepare)
    except OrchError as e:  # the server's key, not the request, is at fault
        raise OrchError(e.message, e.fix) from None
    ciphertext = key.seal(ws_id, name, value)
    for attempt in range(2):
        try:
            with platform.store.session() as s:
                # The count of _check_room and the insert in one step: a set of another secret at
                # the same moment waits here until this one has committed (or it for that one).
                hold(s, WorkspaceRow, ws_id)
                row = s.scalar(_one(ws_id, name))
                if row is None:
                    _check_room(s, ws_id)
                    now = utcnow()
                    row = SecretRow(
                        id=new_id("sec"),
                        workspace_id=ws_id,
                        name=name,
                        ciphertext=ciphertext,
                        created_at=now,
                        updated_at=now,
                    )
                    s.add(row)
                else:
                    row.ciphertext, row.updated_at = ciphertext, utcnow()
                s.flush()
                return _view(row)
        except Clash:  # created by a request at the same moment: replace its value
            if attempt:
                raise
    raise AssertionError("unreachable")


def _one(ws_id: str, name: str) -> Select[SecretRow]:
    return select(SecretRow).where(SecretRow.workspace_id == ws_id, SecretRow.name == name)


def _check_room(s: Session, ws_id: str) -> None:
    count = s.scalar(select(func.count()).select_from(SecretRow).where(SecretRow.workspace_id == ws_id))
    if (count or 0) >= MAX_SECRETS:
        raise Conflict(
            f"This workspace holds {count} secrets, the most one may hold.",
            "Delete one it no longer needs (`orch secret delete NAME`), then set this one.",
        )


def list_secrets(platform: Platform, ws_id: str) -> list[SecretView]:
    """The workspace's secrets by name: names and times, never values."""
    with platform.store.session() as s:
        rows = s.scalars(select(SecretRow).where(SecretRow.workspace_id == ws_id).order_by(SecretRow.name))
        return [_view(r) for r in rows]


def delete_secret(platform: Platform, ws_id: str, name: str) -> None:
    check_name(name)
    with platform.store.session() as s:  # one statement: of two deletes at once, one deletes it
        gone = (
            s.connection()
            .execute(delete(SecretRow).where(SecretRow.workspace_id == ws_id, SecretRow.name == name))
            .rowcount
        )
    if not gone:
        raise NotFound(f"This workspace has no secret {name}.", "See `orch secret list` for its secrets.")


def resolve(session: Session, config: Config, ws: WorkspaceRow, names: Sequence[str]) -> dict[str, str]:
    """The values of the secrets `names` of `ws`, for a run's sandbox; a RunFailed naming what is
    missing or cannot be decrypted, before the run starts."""
    if not names:
        return {}
    rows = {
        r.name: r
        for r in session.scalars(
            select(SecretRow).where(SecretRow.workspace_id == ws.id, SecretRow.name.in_(list(names)))
        )
    }
    if missing := [n for n in names if n not in rows]:
        listed = _words(missing)
        raise RunFailed(
            f"This agent needs the secret{'s' if len(missing) > 1 else ''} {listed}, which workspace "
            f"{ws.name} does not have.",
            f"Set {'each' if len(missing) > 1 else 'it'} with `orch secret set {missing[0]}` "
            "(the value on standard input), then run again.",
        )
    try:
        key = box.load(config)
    except OrchError as e:  # a bad or missing key: the run's reason
        raise RunFailed(f"This agent's secrets cannot be decrypted: {_lower(e.message)}", e.fix) from None
    values, unreadable = {}, []
    for n in names:
        try:
            values[n] = key.open(ws.id, n, rows[n].ciphertext)
        except (box.Unreadable, UnicodeDecodeError):
            unreadable.append(n)
    if unreadable:
        were = "they were" if len(unreadable) > 1 else "it was"
        raise RunFailed(
            f"The secret{'s' if len(unreadable) > 1 else ''} {_words(unreadable)} cannot be decrypted "
            f"with this server's secret key ({key.origin}): {were} set under another key.",
            "Start the server with the key they were set with (ORCH_SECRET_KEY or the key file), or set "
            f"{'them' if len(unreadable) > 1 else 'it'} again with `orch secret set {unreadable[0]}`.",
        )
    size = sum(len(n) + len(v.encode()) + 2 for n, v in values.items())
    if size > MAX_RUN_BYTES:
        raise RunFailed(
            f"This agent's secrets hold {size} bytes together; a sandbox's environment takes at most "
            f"{MAX_RUN_BYTES} bytes of them.",
            "Ask for fewer secrets in orch.yaml, or store shorter values.",
        )
    return values


def _words(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def _view(row: SecretRow) -> SecretView:
    return SecretView(name=row.name, created_at=row.created_at, updated_at=row.updated_at)
