"""bill_lines: which issued bill each billed usage row is on (a row is billed once)

Bills issued before this revision are read back from their documents; a row that an earlier
version put on two bills is kept on the first one issued.

Revision ID: 0012_bill_lines
Revises: 0005_metering
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0012_bill_lines"
down_revision = "0005_metering"


def upgrade() -> None:
    lines = op.create_table(
        "bill_lines",
        sa.Column("usage_id", sa.String(length=32), nullable=False),
        sa.Column("bill_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("usage_id", name=op.f("pk_bill_lines")),
    )
    op.create_index(op.f("ix_bill_lines_bill_id"), "bill_lines", ["bill_id"], unique=False)
    bills = op.get_bind().execute(
        sa.text("SELECT id, document FROM bills ORDER BY issued_at, ledger_index")
    )
    seen: dict[str, str] = {}
    for bill_id, document in bills:
        for line in json.loads(document)["statement"]["lines"]:
            seen.setdefault(str(line["id"]), str(bill_id))
    if seen:
        op.bulk_insert(lines, [{"usage_id": u, "bill_id": b} for u, b in seen.items()])


def downgrade() -> None:
    op.drop_index(op.f("ix_bill_lines_bill_id"), table_name="bill_lines")
    op.drop_table("bill_lines")
