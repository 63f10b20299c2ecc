"""contracts: DSP negotiations, signed agreements, transfer processes

Revision ID: 0003_contracts
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_contracts"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contract_negotiations",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("consumer_pid", sa.String(length=200), nullable=True),
        sa.Column("provider_pid", sa.String(length=200), nullable=True),
        sa.Column("peer", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("offer", sa.JSON(), nullable=False),
        sa.Column("agreement", sa.JSON(), nullable=True),
        sa.Column("callback_address", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contract_negotiations")),
    )
    op.create_index(
        "ix_contract_negotiations_peer_consumer_pid",
        "contract_negotiations",
        ["peer", "consumer_pid"],
    )
    op.create_index(
        "ix_contract_negotiations_peer_provider_pid",
        "contract_negotiations",
        ["peer", "provider_pid"],
    )
    op.create_table(
        "contract_agreements",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("negotiation_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider_signature", sa.Text(), nullable=True),
        sa.Column("consumer_signature", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["negotiation_id"],
            ["contract_negotiations.id"],
            name="fk_contract_agreements_negotiation",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contract_agreements")),
        sa.UniqueConstraint("negotiation_id", name=op.f("uq_contract_agreements_negotiation_id")),
    )
    op.create_table(
        "transfer_processes",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("consumer_pid", sa.String(length=200), nullable=True),
        sa.Column("provider_pid", sa.String(length=200), nullable=True),
        sa.Column("peer", sa.String(length=200), nullable=False),
        sa.Column("agreement_id", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("format", sa.String(length=200), nullable=False),
        sa.Column("data_address", sa.JSON(), nullable=True),
        sa.Column("callback_address", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agreement_id"], ["contract_agreements.id"], name="fk_transfer_processes_agreement"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer_processes")),
    )
    op.create_index(
        "ix_transfer_processes_peer_consumer_pid", "transfer_processes", ["peer", "consumer_pid"]
    )
    op.create_index(
        "ix_transfer_processes_peer_provider_pid", "transfer_processes", ["peer", "provider_pid"]
    )
    op.create_index(
        op.f("ix_transfer_processes_agreement_id"), "transfer_processes", ["agreement_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_transfer_processes_agreement_id"), table_name="transfer_processes")
    op.drop_index("ix_transfer_processes_peer_provider_pid", table_name="transfer_processes")
    op.drop_index("ix_transfer_processes_peer_consumer_pid", table_name="transfer_processes")
    op.drop_table("transfer_processes")
    op.drop_table("contract_agreements")
    op.drop_index("ix_contract_negotiations_peer_provider_pid", table_name="contract_negotiations")
    op.drop_index("ix_contract_negotiations_peer_consumer_pid", table_name="contract_negotiations")
    op.drop_table("contract_negotiations")
