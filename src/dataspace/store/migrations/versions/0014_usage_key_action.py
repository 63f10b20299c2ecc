"""usage_records: one record per (agreement, action, job), not per (agreement, job)

A transfer is metered under its provider process id, which the consumer learns before the
pull; under the old key a consumer could take that id first with a refused query (metered as a
denied ``governed-query``) and the transfer's bill then failed on the duplicate key. With the
action in the key, a record of one kind can never stand in for another's.

The downgrade restores the old key; it fails (a unique violation, nothing changed) once one job
id has records of two actions under an agreement -- exactly what the new key allows.

Revision ID: 0014_usage_key_action
Revises: 0012_bill_lines
"""

from alembic import op

revision = "0014_usage_key_action"
down_revision = "0012_bill_lines"
NAME = "uq_usage_records_agreement_id"  # the naming convention names it by its first column


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_constraint(NAME, type_="unique")
        batch.create_unique_constraint(NAME, ["agreement_id", "action", "job_id"])


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_constraint(NAME, type_="unique")
        batch.create_unique_constraint(NAME, ["agreement_id", "job_id"])
