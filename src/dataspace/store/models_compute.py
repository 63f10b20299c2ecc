"""Tables of the compute area: jobs run under agreements (see DESIGN.md §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.store.models import Base


class JobRow(Base):
    """One job from this node's side: the provider runs it, the consumer asked for it.

    ``state`` moves QUEUED → RUNNING → SUCCEEDED | FAILED, or straight to DENIED when the
    agreement's policy refuses it; ``decision`` keeps every reason of the policy decision.
    One move leaves SUCCEEDED: a multi-party participant that committed its model part when
    the job then failed elsewhere goes SUCCEEDED → FAILED (``aborted-after-commit``, see
    ``services/mp_store.unwind_success``); a governed query's outcome is final.
    A provider's governed job is QUEUED from the moment its id is claimed and RUNNING once
    its policy admitted it (a RUNNING job holds one of the agreement's job slots).
    ``claimed_at`` (wall clock) starts the job's lease: a QUEUED or RUNNING job older than
    the lease, or whose claiming process (``claimed_by``) has ended, is failed as interrupted
    (see ``services/job_records.py``).
    """

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))  # provider | consumer (this node)
    agreement_id: Mapped[str] = mapped_column(String(200))
    peer: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # what was asked (SQL, parameters)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_meta: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the claiming process's tag (scratch.process_tag): once it is gone, so is the job
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_jobs_agreement_id", "agreement_id"),)


__all__ = ["Base", "JobRow"]
