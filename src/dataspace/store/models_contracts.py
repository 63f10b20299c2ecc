"""Tables of the contracts area (see DESIGN.md §3). Imported by :mod:`dataspace.store.models`.

A process row's ``id`` is this node's own pid for it (the ``providerPid`` when this node is the
provider, the ``consumerPid`` when it is the consumer); ``peer`` is the other node's name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.store.models import Base


class ContractNegotiationRow(Base):
    """One DSP contract negotiation, from this node's side."""

    __tablename__ = "contract_negotiations"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))  # consumer | provider (this node)
    consumer_pid: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider_pid: Mapped[str | None] = mapped_column(String(200), nullable=True)
    peer: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20))
    offer: Mapped[dict[str, Any]] = mapped_column(JSON)  # the latest offer, DSP compact JSON-LD
    agreement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    callback_address: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    offer_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    purpose: Mapped[str | None] = mapped_column(String(100), nullable=True)  # the consumer's

    __table_args__ = (
        Index("ix_contract_negotiations_peer_consumer_pid", "peer", "consumer_pid"),
        Index("ix_contract_negotiations_peer_provider_pid", "peer", "provider_pid"),
    )


class ContractAgreementRow(Base):
    """An agreement reached by a negotiation, with both parties' Ed25519 signatures."""

    __tablename__ = "contract_agreements"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the Agreement's @id
    negotiation_id: Mapped[str] = mapped_column(
        String(200),
        ForeignKey("contract_negotiations.id", name="fk_contract_agreements_negotiation"),
        unique=True,
    )
    provider: Mapped[str] = mapped_column(String(200))  # assigner
    consumer: Mapped[str] = mapped_column(String(200))  # assignee
    target: Mapped[str] = mapped_column(String(200))  # the dataset id
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)  # the ODRL Agreement, DSP compact
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    provider_signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    consumer_signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    offer_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    purpose: Mapped[str | None] = mapped_column(String(100), nullable=True)


class TransferProcessRow(Base):
    """One DSP transfer process under an agreement, from this node's side."""

    __tablename__ = "transfer_processes"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))
    consumer_pid: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider_pid: Mapped[str | None] = mapped_column(String(200), nullable=True)
    peer: Mapped[str] = mapped_column(String(200))
    agreement_id: Mapped[str] = mapped_column(
        String(200),
        ForeignKey("contract_agreements.id", name="fk_transfer_processes_agreement"),
        index=True,
    )
    state: Mapped[str] = mapped_column(String(20))
    format: Mapped[str] = mapped_column(String(200))
    data_address: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    callback_address: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_transfer_processes_peer_consumer_pid", "peer", "consumer_pid"),
        Index("ix_transfer_processes_peer_provider_pid", "peer", "provider_pid"),
    )


class TransferExtractRow(Base):
    """The data side of one transfer process (same ``id`` as its ``transfer_processes`` row).

    Provider: the extract prepared for the consumer (path under the node's ``transfers/``),
    its sha256, rows, bytes and columns, and the one-time pull token — only its sha256 is kept.
    Consumer: the mode asked for, what the provider stated, and where the data was written.
    """

    __tablename__ = "transfer_extracts"
    id: Mapped[str] = mapped_column(
        String(200),
        ForeignKey("transfer_processes.id", name="fk_transfer_extracts_process"),
        primary_key=True,
    )
    mode: Mapped[str] = mapped_column(String(20))  # raw | pseudonymized
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    columns: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    token_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    token_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)
    pulled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # provider: when the pull's delivery ended (billed or not); until then it holds a slot
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # both: when the agreement's delete duty falls due (the consumer deletes what it received)
    delete_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class OfferRow(Base):
    """A published offer: the ODRL policy for one dataset plus the terms enforcement needs.

    ``dp`` holds the differential-privacy parameters the policy's budget is spent under
    (clamping bounds, contributions per individual, epsilon and delta per query); ``price_terms``
    the metering terms. Withdrawn offers stay for the agreements made under them.
    """

    __tablename__ = "offers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the Offer's @id
    dataset_id: Mapped[str] = mapped_column(String(32), index=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)  # ODRL Offer, compact JSON-LD
    template: Mapped[str | None] = mapped_column(String(50), nullable=True)
    dp: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    price_terms: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    auto_approve: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


__all__ = [
    "Base",
    "ContractAgreementRow",
    "ContractNegotiationRow",
    "OfferRow",
    "TransferExtractRow",
    "TransferProcessRow",
]


class OwedNoticeRow(Base):
    """A DSP notice (a termination, a transfer's completion) this node could not deliver to
    its peer: sent again until the peer answers, or given up (:mod:`.peer_outbox`)."""

    __tablename__ = "owed_notices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # of peer, path and body
    peer: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    about: Mapped[str] = mapped_column(String(300))  # e.g. "transfer <pid> termination"
    attempts: Mapped[int] = mapped_column(BigInteger)
    next_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
