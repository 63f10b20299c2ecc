"""transfer extracts: the data side of DSP transfer processes

Revision ID: 0007_transfers
Revises: 0006_offers_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_transfers"
down_revision = "0006_offers_jobs"


def upgrade() -> None:
    op.create_table(
        "transfer_extracts",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("token_sha256", sa.String(length=64), nullable=True),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["id"], ["transfer_processes.id"], name="fk_transfer_extracts_process"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer_extracts")),
    )


def downgrade() -> None:
    op.drop_table("transfer_extracts")
