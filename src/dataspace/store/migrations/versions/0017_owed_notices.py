"""owed_notices: DSP notices a peer could not be told yet, sent again by the node's sweep

Revision ID: 0017_owed_notices
Revises: 0015_delete_by
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_owed_notices"
down_revision = "0015_delete_by"


def upgrade() -> None:
    op.create_table(
        "owed_notices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("peer", sa.String(200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("about", sa.String(300), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_owed_notices_next_at", "owed_notices", ["next_at"])


def downgrade() -> None:
    op.drop_index("ix_owed_notices_next_at", table_name="owed_notices")
    op.drop_table("owed_notices")
