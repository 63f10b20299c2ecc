"""Tables of the identity area (see DESIGN.md §3). Imported by :mod:`dataspace.store.models`."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.store.models import Base

__all__ = ["Base", "SeenNonce"]


class SeenNonce(Base):
    """A signed request's (keyid, nonce), kept until its signature could no longer verify.

    The primary key makes "insert, and a conflict is a replay" atomic on every backend.
    ``expires_at`` is Unix seconds (UTC), so pruning is one indexed range delete.
    """

    __tablename__ = "seen_nonces"
    keyid: Mapped[str] = mapped_column(String(200), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_seen_nonces_expires_at", "expires_at"),)
