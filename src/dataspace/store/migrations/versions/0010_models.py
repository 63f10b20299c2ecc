"""trained federated models (one part per node)

Revision ID: 0010_models
Revises: 0006_offers_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_models"
down_revision = "0006_offers_jobs"


def upgrade() -> None:
    op.create_table(
        "federated_models",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=20), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("initiator", sa.String(length=200), nullable=False),
        sa.Column("part_file", sa.String(length=300), nullable=True),
        sa.Column("part_sha256", sa.String(length=64), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federated_models")),
    )
    op.create_index("ix_federated_models_job_id", "federated_models", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_federated_models_job_id", table_name="federated_models")
    op.drop_table("federated_models")
