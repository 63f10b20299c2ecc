"""Trained federated models: one row per model at every node that holds a part of it.

A model trained across nodes has no single home. Each node keeps **its own part** (a weight
block, a split book, the trees, the global FedAvg parameters) as a file under its data dir
(``models/<model id>.<holder>.json``) and one row here naming it, its SHA-256, and what the
initiator reported about the whole model (which node holds which part, metrics,
contribution). ``state`` is ``staged`` while the job has not ended everywhere and ``final``
once it has; a staged part is never used or listed as a model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from dataspace.store.models import Base


class FederatedModelRow(Base):
    __tablename__ = "federated_models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the training job's id
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    family: Mapped[str] = mapped_column(String(20))  # vlr | vgbdt | fedavg
    role: Mapped[str] = mapped_column(String(20))  # initiator | provider | dealer
    state: Mapped[str] = mapped_column(String(10))  # staged | final
    initiator: Mapped[str] = mapped_column(String(200))
    part_file: Mapped[str | None] = mapped_column(String(300), nullable=True)
    part_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)  # parts, metrics, contribution, params
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
