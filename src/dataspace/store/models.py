"""Tables of a node's state. Dataset contents live as Parquet files, not here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}

MAX_TITLE = 500  # a dataset's title, characters (services check it before the store does)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ApiToken(Base):
    """Bearer tokens for the HTTP API; only the SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Dataset(Base):
    """A registered dataset: where its Parquet file is and what the catalog learned about it."""

    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(MAX_TITLE))
    domain: Mapped[str] = mapped_column(String(50))
    description: Mapped[str] = mapped_column(Text, default="")
    file_name: Mapped[str] = mapped_column(String(300))  # relative to the node's data dir
    file_sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(500))
    source_format: Mapped[str] = mapped_column(String(20))
    source_encoding: Mapped[str | None] = mapped_column(String(30), nullable=True)
    rows: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    classification: Mapped[dict[str, Any]] = mapped_column(JSON)
    grading: Mapped[dict[str, Any]] = mapped_column(JSON)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON)


class LedgerEntry(Base):
    """One leaf of the node's Merkle log: canonical JSON of the entry and its RFC 9162 leaf hash."""

    __tablename__ = "ledger_entries"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    entry: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed as the leaf
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON whose SHA-256 the entry names


class LedgerNode(Base):
    """Hash of the complete subtree of 2**level leaves starting at leaf idx * 2**level.

    Kept so that proofs over millions of entries read O(log n) rows instead of rehashing.
    """

    __tablename__ = "ledger_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerHead(Base):
    """The single row every append locks, so appends are serialised on every backend."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


class LedgerCheckpoint(Base):
    """A signed checkpoint (C2SP tlog-checkpoint as a signed note) for one tree size."""

    __tablename__ = "ledger_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WitnessedLog(Base):
    """As a witness: the largest checkpoint of another member's log this node cosigned. A
    newer one is cosigned only with a consistency proof from this one (tlog-witness)."""

    __tablename__ = "witnessed_logs"
    origin: Mapped[str] = mapped_column(String(300), primary_key=True)
    member: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# Each area keeps its tables in its own module; importing them here registers them on Base.
from dataspace.store import (  # noqa: E402
    models_compute,
    models_contracts,
    models_federated,
    models_identity,
    models_metering,
    models_privacy,
)

__all__ = [
    "Base",
    "models_compute",
    "models_contracts",
    "models_federated",
    "models_identity",
    "models_metering",
    "models_privacy",
]
