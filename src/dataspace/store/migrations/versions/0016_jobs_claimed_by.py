"""jobs: claimed_by, the process that claimed a provider job (its liveness ends the lease)

Revision ID: 0016_jobs_claimed_by
Revises: 0009_jobs_lease
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_jobs_claimed_by"
down_revision = "0009_jobs_lease"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claimed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claimed_by")
