"""API bearer tokens: issued with a role, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataspace.errors import AuthError, InvalidName, NotFound, UsageError
from dataspace.jsondoc import utc
from dataspace.ledger import log
from dataspace.services.names import check_label
from dataspace.services.node import Node
from dataspace.store.models import ApiToken

ROLES = ("admin", "provider", "consumer", "auditor")
PREFIX = "dst_"


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def actor(self) -> str:
        return f"token:{self.id}:{self.name}"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    revoked = utc(row.revoked_at) if row.revoked_at else None
    return TokenInfo(row.id, row.name, row.role, utc(row.created_at), revoked)


def issue_in(session: Session, *, name: str, role: str, actor: str) -> str:
    """Issue a token inside the caller's transaction; returns the secret."""
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}", hint="choose one of: " + ", ".join(ROLES))
    if not name.strip() or len(name) > 200:
        raise InvalidName("token name must be 1-200 characters", hint="pass --name NAME")
    check_label(name, "token name")
    secret = PREFIX + secrets.token_urlsafe(32)
    token_id = secrets.token_hex(6)
    session.add(
        ApiToken(
            id=token_id,
            name=name,
            role=role,
            secret_sha256=_hash(secret),
            created_at=datetime.now(UTC),
        )
    )
    # The ledger names the token, never its secret or hash.
    log.append(
        session,
        actor=actor,
        action="token.issued",
        payload={"id": token_id, "name": name, "role": role},
    )
    return secret


def issue(node: Node, *, name: str, role: str, actor: str) -> str:
    with node.store.write() as session:
        return issue_in(session, name=name, role=role, actor=actor)


def list_tokens(node: Node) -> list[TokenInfo]:
    with node.store.read() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.created_at)).all()
        return [_info(r) for r in rows]


def revoke(node: Node, token_id: str, *, actor: str) -> TokenInfo:
    with node.store.write() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFound(f"no token with id {token_id!r}", hint="see `dataspace token list`")
        if row.revoked_at is not None:
            return _info(row)
        row.revoked_at = datetime.now(UTC)
        log.append(session, actor=actor, action="token.revoked", payload={"id": token_id})
        return _info(row)


def authenticate(node: Node, secret: str | None) -> TokenInfo:
    """The token behind a bearer secret; raises AuthError for a missing, unknown or revoked one."""
    if not secret:
        raise AuthError("missing bearer token", hint="send 'Authorization: Bearer <token>'")
    with node.store.read() as session:
        row = session.scalars(
            select(ApiToken).where(ApiToken.secret_sha256 == _hash(secret))
        ).first()
    if row is None:
        raise AuthError(
            "unknown API token", hint="check the token, or issue one with `dataspace token issue`"
        )
    if row.revoked_at is not None:
        raise AuthError(
            f"API token {row.id} was revoked", hint="issue a new one with `dataspace token issue`"
        )
    return _info(row)
