"""Workspaces and their API tokens."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch.errors import Unauthorized
from orch.models import new_id
from orch.services.platform import Platform
from orch.store.schema import TokenRow, WorkspaceRow

DEFAULT_WORKSPACE = "default"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, workspace_id: str, name: str) -> str:
    """Create a token; only its hash is stored, so the caller must hand the text on now."""
    token = "orch_" + secrets.token_urlsafe(32)
    session.add(TokenRow(id=new_id("tok"), workspace_id=workspace_id, name=name, sha256=_hash(token)))
    return token


def create_workspace(session: Session, name: str) -> tuple[WorkspaceRow, str]:
    """A new workspace and its admin token."""
    ws = WorkspaceRow(id=new_id("ws"), name=name)
    session.add(ws)
    session.flush()
    return ws, issue_token(session, ws.id, "admin")


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
        return issue_token(s, ws.id, "cli")


def authenticate(session: Session, token: str | None) -> WorkspaceRow:
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
    return ws
