"""metering: usage records and issued bills

Revision ID: 0005_metering
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_metering"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("agreement_id", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("rows_scanned", sa.BigInteger(), nullable=False),
        sa.Column("result_rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("epsilon_spent", sa.String(length=50), nullable=False),
        sa.Column("delta_spent", sa.String(length=50), nullable=False),
        sa.Column("cpu_us", sa.BigInteger(), nullable=False),
        sa.Column("wall_us", sa.BigInteger(), nullable=False),
        sa.Column("price_amount", sa.String(length=50), nullable=False),
        sa.Column("currency", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_records")),
        sa.UniqueConstraint("agreement_id", "job_id", name=op.f("uq_usage_records_agreement_id")),
        sa.UniqueConstraint("ledger_index", name=op.f("uq_usage_records_ledger_index")),
    )
    op.create_index(op.f("ix_usage_records_agreement_id"), "usage_records", ["agreement_id"])
    op.create_index(op.f("ix_usage_records_consumer"), "usage_records", ["consumer"])
    op.create_index(op.f("ix_usage_records_finished_at"), "usage_records", ["finished_at"])
    op.create_table(
        "bills",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("agreement_id", sa.String(length=200), nullable=True),
        sa.Column("period", sa.String(length=7), nullable=True),
        sa.Column("statement_sha256", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bills")),
        sa.UniqueConstraint("statement_sha256", name=op.f("uq_bills_statement_sha256")),
        sa.UniqueConstraint("ledger_index", name=op.f("uq_bills_ledger_index")),
    )
    op.create_index(op.f("ix_bills_consumer"), "bills", ["consumer"])


def downgrade() -> None:
    op.drop_index(op.f("ix_bills_consumer"), table_name="bills")
    op.drop_table("bills")
    op.drop_index(op.f("ix_usage_records_finished_at"), table_name="usage_records")
    op.drop_index(op.f("ix_usage_records_consumer"), table_name="usage_records")
    op.drop_index(op.f("ix_usage_records_agreement_id"), table_name="usage_records")
    op.drop_table("usage_records")
