"""transfer_extracts.delete_by: when a received extract must be deleted (a delete duty)

Revision ID: 0015_delete_by
Revises: 0013_delivery_settled
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_delete_by"
down_revision = "0013_delivery_settled"


def upgrade() -> None:
    with op.batch_alter_table("transfer_extracts") as batch:
        batch.add_column(sa.Column("delete_by", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfer_extracts") as batch:
        batch.drop_column("delete_by")
