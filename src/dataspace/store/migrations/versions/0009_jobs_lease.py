"""jobs: claimed_at, the start of a provider job's lease

Revision ID: 0009_jobs_lease
Revises: 0006_offers_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_jobs_lease"
down_revision = "0006_offers_jobs"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claimed_at")
