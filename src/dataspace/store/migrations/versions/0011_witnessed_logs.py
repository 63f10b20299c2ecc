"""witnessed_logs: the largest checkpoint this node cosigned, per log it witnesses

Revision ID: 0011_witnessed_logs
Revises: 0010_models
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_witnessed_logs"
down_revision = "0010_models"


def upgrade() -> None:
    op.create_table(
        "witnessed_logs",
        sa.Column("origin", sa.String(length=300), nullable=False),
        sa.Column("member", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_witnessed_logs")),
    )


def downgrade() -> None:
    op.drop_table("witnessed_logs")
