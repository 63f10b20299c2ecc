"""transfer_extracts.settled_at: when the provider saw a pull's delivery end

A pull counts against its agreement's ``count`` from the moment its token is spent until its
delivery is settled (billed, or ended unbilled), whatever the process's state meanwhile.
Deliveries already billed before this revision are settled at their pull.

Revision ID: 0013_delivery_settled
Revises: 0007_transfers
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_delivery_settled"
down_revision = "0007_transfers"


def upgrade() -> None:
    with op.batch_alter_table("transfer_extracts") as batch:
        batch.add_column(sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE transfer_extracts SET settled_at = pulled_at WHERE pulled_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("transfer_extracts") as batch:
        batch.drop_column("settled_at")
