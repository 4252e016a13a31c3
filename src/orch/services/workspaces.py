"""Workspaces and their API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from orch.errors import Conflict, Forbidden, NotFound, Unauthorized
from orch.models import check_name, new_id, shown_name
from orch.services.platform import Platform
from orch.services.views import NewTokenView, NewWorkspaceView, TokenView, WorkspaceView
from orch.store.db import Gone, hold_all
from orch.store.schema import TokenRow, WorkspaceRow

DEFAULT_WORKSPACE = "default"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, workspace_id: str, name: str, admin: bool = False) -> str:
    """Create a token; only its hash is stored, so the caller must hand the text on now."""
    return _issue(session, workspace_id, name, admin)[1]


def _issue(session: Session, workspace_id: str, name: str, admin: bool) -> tuple[TokenRow, str]:
    token = "orch_" + secrets.token_urlsafe(32)
    row = TokenRow(id=new_id("tok"), workspace_id=workspace_id, name=name, sha256=_hash(token), admin=admin)
    session.add(row)
    session.flush()
    return row, token


def create_workspace(session: Session, name: str) -> tuple[WorkspaceRow, str]:
    """A new workspace and its admin token (the first start's, for the operator)."""
    ws = WorkspaceRow(id=new_id("ws"), name=name)
    session.add(ws)
    session.flush()
    return ws, issue_token(session, ws.id, "admin", admin=True)


def bootstrap(platform: Platform, cli_token: str) -> str | None:
    """Make sure the local CLI can act: on first start create the default workspace and its
    admin token; later, if the CLI's token no longer works, issue it a new one.
    Returns a token to write into the CLI config, or None when the current one works."""
    with platform.store.session() as s:
        ws = s.scalar(select(WorkspaceRow).where(WorkspaceRow.name == DEFAULT_WORKSPACE))
        if ws is None:
            return create_workspace(s, DEFAULT_WORKSPACE)[1]
        if cli_token and s.scalar(select(TokenRow).where(TokenRow.sha256 == _hash(cli_token))):
            return None
        # The local CLI is the operator's: its stand-in token keeps the admin rights.
        return issue_token(s, ws.id, "cli", admin=True)


def authenticate(session: Session, token: str | None) -> WorkspaceRow:
    return identify(session, token).workspace


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the token's workspace and whether the token is an admin token."""

    workspace: WorkspaceRow
    token_id: str
    admin: bool

    @property
    def workspace_id(self) -> str:
        return self.workspace.id


def _no_token() -> Unauthorized:
    return Unauthorized(
        "This request has no API token.",
        "Send 'Authorization: Bearer TOKEN'; the CLI reads it from ORCH_TOKEN or its config.",
    )


def _not_valid() -> Unauthorized:
    return Unauthorized(
        "The API token is not valid.",
        "Use the admin token the server wrote to ORCH_HOME/config.toml on its first start, or a "
        "token an admin created for you.",
    )


def identify(session: Session, token: str | None) -> Caller:
    """The caller behind `token`, looked up on every request: a revoked token fails at once."""
    if not token:
        raise _no_token()
    # One query, the token with its workspace: this runs before every API call.
    found = session.execute(
        select(TokenRow, WorkspaceRow)
        .join(WorkspaceRow, WorkspaceRow.id == TokenRow.workspace_id)
        .where(TokenRow.sha256 == _hash(token))
    ).first()
    row, ws = found if found is not None else (None, None)
    if ws is None:
        raise _not_valid()
    assert row is not None  # ws is only found through a row
    return Caller(ws, row.id, row.admin)


# What most routes need of their caller, its workspace's id, found as `identify` finds it; the
# statement is built once and run on a plain connection, without an ORM session: about a
# quarter of the CPU, on the path of nearly every request.
_WORKSPACE_OF = (
    select(WorkspaceRow.id)
    .join(TokenRow, WorkspaceRow.id == TokenRow.workspace_id)
    .where(TokenRow.sha256 == bindparam("sha256"))
)


def workspace_of(platform: Platform, token: str | None) -> str:
    """The id of the workspace behind `token` (looked up on every request, as `identify`)."""
    if not token:
        raise _no_token()
    with platform.store.db.connect() as conn:
        found = conn.execute(_WORKSPACE_OF, {"sha256": _hash(token)}).scalar()
    if found is None:
        raise _not_valid()
    return str(found)


def require_admin(caller: Caller, what: str) -> None:
    if not caller.admin:
        raise Forbidden(
            f"Only an admin token can {what}; this token is a plain token of workspace "
            f"{caller.workspace.name}.",
            "Ask the platform's operator, or use the admin token the server wrote on its first start.",
        )


def caller(platform: Platform, token: str | None) -> Caller:
    """The caller behind `token` (see `identify`), in a session of its own."""
    with platform.store.session() as s:
        return identify(s, token)


def new_workspace(platform: Platform, caller: Caller, name: str) -> NewWorkspaceView:
    """A workspace made by an admin, with its first token: a plain token of that workspace (an
    admin one would see every other workspace, which a tenant must not)."""
    require_admin(caller, "create workspaces")
    check_name(name, "Workspace name", id_prefix="ws_")
    # One made at the same moment, past _check_free too, loses at the unique key: the same 409.
    with platform.store.session(clash=_name_taken(name)) as s:
        _check_free(s, name)
        ws = WorkspaceRow(id=new_id("ws"), name=name)
        s.add(ws)
        s.flush()
        row, text = _issue(s, ws.id, "first", admin=False)
        return NewWorkspaceView(**_workspace_view(ws).model_dump(), token=text, token_id=row.id)


def _check_free(s: Session, name: str) -> None:
    if s.scalar(select(WorkspaceRow.id).where(WorkspaceRow.name == name)) is not None:
        raise _name_taken(name)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A workspace named {name} exists already.", "Choose another name.")


def list_workspaces(platform: Platform, caller: Caller) -> list[WorkspaceView]:
    """Every workspace for an admin token; the token's own one otherwise."""
    if not caller.admin:
        return [_workspace_view(caller.workspace)]
    with platform.store.session() as s:
        rows = s.scalars(select(WorkspaceRow).order_by(WorkspaceRow.created_at, WorkspaceRow.name))
        return [_workspace_view(ws) for ws in rows]


def target_workspace(session: Session, caller: Caller, workspace: str | None, what: str) -> WorkspaceRow:
    """The workspace a token call is about: the caller's own, or (admin only) the one named."""
    if not workspace or workspace in (caller.workspace.name, caller.workspace.id):
        return caller.workspace
    # Refused the same way whether or not that workspace exists, so a plain token learns nothing.
    require_admin(caller, what)
    ws = session.scalar(
        select(WorkspaceRow).where((WorkspaceRow.name == workspace) | (WorkspaceRow.id == workspace))
    )
    if ws is None:
        raise NotFound(
            f"No workspace {shown_name(workspace)!r}.", "See `orch workspace list` for their names."
        )
    return ws


def new_token(
    platform: Platform, caller: Caller, workspace: str | None, name: str, admin: bool = False
) -> NewTokenView:
    """A token for the caller's workspace (an admin's: for any workspace); its text is in the
    answer, the only time it exists outside the caller's hands."""
    check_name(name, "Token name")
    with platform.store.session() as s:
        ws = target_workspace(s, caller, workspace, "create tokens for another workspace")
        if admin:
            require_admin(caller, "create admin tokens")
        row, text = _issue(s, ws.id, name, admin=admin)
        return NewTokenView(**_token_view(row, ws).model_dump(), token=text)


def list_tokens(platform: Platform, caller: Caller, workspace: str | None = None) -> list[TokenView]:
    """Tokens (never their text): an admin's of every workspace unless one is named, else the
    caller's own workspace's."""
    query = select(TokenRow, WorkspaceRow).join(WorkspaceRow, WorkspaceRow.id == TokenRow.workspace_id)
    with platform.store.session() as s:
        if workspace or not caller.admin:
            ws = target_workspace(s, caller, workspace, "list another workspace's tokens")
            query = query.where(TokenRow.workspace_id == ws.id)
        rows = s.execute(query.order_by(WorkspaceRow.name, TokenRow.created_at, TokenRow.id)).all()
        return [_token_view(t, w) for t, w in rows]


def revoke_token(platform: Platform, caller: Caller, token_id: str) -> TokenView:
    """Delete a token; the next request that sends it is refused (nothing caches tokens). A
    plain token revokes its own workspace's plain tokens, an admin token any."""
    with platform.store.session() as s:  # a token's admin flag never changes
        admin = s.scalar(select(TokenRow.admin).where(TokenRow.id == token_id))
    with platform.store.session() as s:
        # Two admin tokens revoking each other at once (or a workspace delete taking admin tokens
        # with it): each counted the other and both went. The count is made under the lock.
        if admin:
            hold_admins(s)
        row = s.get(TokenRow, token_id)
        if row is None or not (caller.admin or row.workspace_id == caller.workspace_id):
            raise NotFound(f"No token {shown_name(token_id)!r}.", "See `orch token list` for their ids.")
        if row.admin and not caller.admin:  # as it may not make one: an operator's stays theirs
            raise Forbidden(
                f"Only an admin token can revoke {token_id}, an admin token; this token is a plain "
                f"token of workspace {caller.workspace.name}, so nothing was revoked.",
                "Ask someone with an admin token to revoke it.",
            )
        admins = s.scalar(select(func.count()).select_from(TokenRow).where(TokenRow.admin.is_(True)))
        if row.admin and admins == 1:
            raise Conflict(
                f"{token_id} is the last admin token; without it no one could create workspaces.",
                "Create another admin token first, then revoke this one.",
            )
        ws = s.get(WorkspaceRow, row.workspace_id)
        if ws is None:  # deleted (with its tokens) since `row` was read
            raise Gone()
        s.delete(row)
        return _token_view(row, ws)


def hold_admins(s: Session) -> None:
    """Lock the platform's admin tokens until the session ends: taken by every write that may
    remove admin tokens (a revoke, a workspace's delete) before it checks that some would stay."""
    hold_all(s, TokenRow, TokenRow.admin.is_(True))


def _workspace_view(ws: WorkspaceRow) -> WorkspaceView:
    return WorkspaceView(id=ws.id, name=ws.name, created_at=ws.created_at)


def _token_view(row: TokenRow, ws: WorkspaceRow) -> TokenView:
    return TokenView(
        id=row.id,
        name=row.name,
        workspace=ws.name,
        workspace_id=ws.id,
        admin=row.admin,
        created_at=row.created_at,
    )
