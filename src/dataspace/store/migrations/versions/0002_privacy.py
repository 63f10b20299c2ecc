"""privacy: DP budgets per agreement and their spends

Revision ID: 0002_privacy
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_privacy"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dp_budgets",
        sa.Column("agreement_id", sa.String(length=100), nullable=False),
        sa.Column("epsilon_total", sa.String(length=50), nullable=False),
        sa.Column("delta_total", sa.String(length=50), nullable=False),
        sa.Column("epsilon_spent", sa.String(length=50), nullable=False),
        sa.Column("delta_spent", sa.String(length=50), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agreement_id", name=op.f("pk_dp_budgets")),
    )
    op.create_table(
        "dp_spends",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("agreement_id", sa.String(length=100), nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=False),
        sa.Column("epsilon", sa.String(length=50), nullable=False),
        sa.Column("delta", sa.String(length=50), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dp_spends")),
    )
    op.create_index(op.f("ix_dp_spends_agreement_id"), "dp_spends", ["agreement_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_dp_spends_agreement_id"), table_name="dp_spends")
    op.drop_table("dp_spends")
    op.drop_table("dp_budgets")
