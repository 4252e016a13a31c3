"""Workspaces and their API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orch.errors import Conflict, Forbidden, NotFound, Unauthorized
from orch.models import check_name, new_id
from orch.services.platform import Platform
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


def identify(session: Session, token: str | None) -> Caller:
    """The caller behind `token`, looked up on every request: a revoked token fails at once."""
    if not token:
        raise Unauthorized(
            "This request has no API token.",
            "Send 'Authorization: Bearer TOKEN'; the CLI reads it from ORCH_TOKEN or its config.",
        )
    row = session.scalar(select(TokenRow).where(TokenRow.sha256 == _hash(token)))
    ws = session.get(WorkspaceRow, row.workspace_id) if row else None
    if ws is None:
        raise Unauthorized(
            "The API token is not valid.",
            "Use the token `orch server` wrote to ORCH_HOME/config.toml, or run `orch login`.",
        )
    assert row is not None  # ws is only found through a row
    return Caller(ws, row.id, row.admin)


@dataclass(frozen=True)
class NewToken:
    """A token as created: the only time its text exists outside the caller's hands."""

    token: str
    row: TokenRow
    workspace: WorkspaceRow


def require_admin(caller: Caller, what: str) -> None:
    if not caller.admin:
        raise Forbidden(
            f"Only an admin token can {what}; this token is a plain token of workspace "
            f"{caller.workspace.name}.",
            "Ask the platform's operator, or use the admin token `orch server` wrote on its first start.",
        )


def new_workspace(session: Session, caller: Caller, name: str) -> tuple[WorkspaceRow, NewToken]:
    """A workspace made by an admin, with its first token: a plain token of that workspace (an
    admin one would see every other workspace, which a tenant must not)."""
    require_admin(caller, "create workspaces")
    check_name(name, "Workspace name")
    if session.scalar(select(WorkspaceRow).where(WorkspaceRow.name == name)) is not None:
        raise Conflict(f"A workspace named {name} exists already.", "Choose another name.")
    ws = WorkspaceRow(id=new_id("ws"), name=name)
    session.add(ws)
    session.flush()
    row, text = _issue(session, ws.id, "first", admin=False)
    return ws, NewToken(text, row, ws)


def list_workspaces(session: Session, caller: Caller) -> list[WorkspaceRow]:
    """Every workspace for an admin token; the token's own one otherwise."""
    if not caller.admin:
        return [caller.workspace]
    return list(session.scalars(select(WorkspaceRow).order_by(WorkspaceRow.created_at, WorkspaceRow.name)))


def _target_workspace(session: Session, caller: Caller, workspace: str | None, what: str) -> WorkspaceRow:
    """The workspace a token call is about: the caller's own, or (admin only) the one named."""
    if not workspace or workspace in (caller.workspace.name, caller.workspace.id):
        return caller.workspace
    # Refused the same way whether or not that workspace exists, so a plain token learns nothing.
    require_admin(caller, what)
    ws = session.scalar(
        select(WorkspaceRow).where((WorkspaceRow.name == workspace) | (WorkspaceRow.id == workspace))
    )
    if ws is None:
        raise NotFound(f"No workspace {workspace!r}.", "Run `orch workspace list` for the workspaces.")
    return ws


def new_token(
    session: Session, caller: Caller, workspace: str | None, name: str, admin: bool = False
) -> NewToken:
    check_name(name, "Token name")
    ws = _target_workspace(session, caller, workspace, "create tokens for another workspace")
    if admin:
        require_admin(caller, "create admin tokens")
    row, text = _issue(session, ws.id, name, admin=admin)
    return NewToken(text, row, ws)


def list_tokens(
    session: Session, caller: Caller, workspace: str | None = None
) -> list[tuple[TokenRow, WorkspaceRow]]:
    """Tokens (never their text): an admin's of every workspace unless one is named, else the
    caller's own workspace's."""
    query = select(TokenRow, WorkspaceRow).join(WorkspaceRow, WorkspaceRow.id == TokenRow.workspace_id)
    if workspace or not caller.admin:
        ws = _target_workspace(session, caller, workspace, "list another workspace's tokens")
        query = query.where(TokenRow.workspace_id == ws.id)
    rows = session.execute(query.order_by(WorkspaceRow.name, TokenRow.created_at, TokenRow.id)).all()
    return [(t, w) for t, w in rows]


def revoke_token(session: Session, caller: Caller, token_id: str) -> tuple[TokenRow, WorkspaceRow]:
    """Delete a token; the next request that sends it is refused (nothing caches tokens)."""
    row = session.get(TokenRow, token_id)
    if row is None or not (caller.admin or row.workspace_id == caller.workspace_id):
        raise NotFound(f"No token {token_id!r}.", "Run `orch token list` for the tokens' ids.")
    admins = session.scalar(select(func.count()).select_from(TokenRow).where(TokenRow.admin.is_(True)))
    if row.admin and admins == 1:
        raise Conflict(
            f"{token_id} is the last admin token; without it no one could create workspaces.",
            "Create another with `orch token create --admin` first, then revoke this one.",
        )
    ws = session.get(WorkspaceRow, row.workspace_id)
    assert ws is not None  # tokens are deleted with their workspace
    session.delete(row)
    return row, ws
