"""identity: seen_nonces for replay protection of signed peer requests

Revision ID: 0004_identity
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_identity"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seen_nonces",
        sa.Column("keyid", sa.String(length=200), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("keyid", "nonce", name=op.f("pk_seen_nonces")),
    )
    op.create_index("ix_seen_nonces_expires_at", "seen_nonces", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_seen_nonces_expires_at", table_name="seen_nonces")
    op.drop_table("seen_nonces")
