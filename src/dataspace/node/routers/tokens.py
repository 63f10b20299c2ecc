"""API tokens: list, issue (the secret is shown once), revoke. Admin only."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, Field

from dataspace.node.auth import ADMIN, get_node, require
from dataspace.node.routers.fields import Body
from dataspace.services import tokens
from dataspace.services.node import Node
from dataspace.services.tokens import TokenInfo

router = APIRouter(prefix="/tokens", tags=["tokens"])

Role = Literal["admin", "provider", "consumer", "auditor"]


class Token(BaseModel):
    id: str
    name: str
    role: str
    created_at: str
    revoked_at: str | None


class TokenRequest(Body):
    name: str = Field(min_length=1, max_length=200, description="who or what the token is for")
    role: Role = Field(description="what the token may do")


class IssuedToken(BaseModel):
    token: Token
    secret: str = Field(description="the bearer secret; shown only in this response, never again")


def _public(info: TokenInfo) -> Token:
    return Token.model_validate(info.to_dict())


@router.get("", summary="List API tokens", response_model=list[Token])
def list_tokens(
    node: Node = Depends(get_node), _token: TokenInfo = Depends(require(*ADMIN))
) -> list[Token]:
    """Every token with its role and revocation time; secrets are never stored or shown."""
    return [_public(t) for t in tokens.list_tokens(node)]


@router.post(
    "",
    summary="Issue an API token",
    response_model=IssuedToken,
    status_code=status.HTTP_201_CREATED,
)
def issue_token(
    body: TokenRequest,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*ADMIN)),
) -> IssuedToken:
    """Issues a token with a role. The secret is in this response only: store it now."""
    secret = tokens.issue(node, name=body.name, role=body.role, actor=caller.actor)
    return IssuedToken(token=_public(tokens.authenticate(node, secret)), secret=secret)


@router.delete("/{token_id}", summary="Revoke an API token", response_model=Token)
def revoke_token(
    token_id: str,
    node: Node = Depends(get_node),
    caller: TokenInfo = Depends(require(*ADMIN)),
) -> Token:
    """Revokes the token at once; revoking a revoked token is a no-op that returns it."""
    return _public(tokens.revoke(node, token_id, actor=caller.actor))
