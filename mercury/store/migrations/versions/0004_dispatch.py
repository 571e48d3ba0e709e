"""dispatch: delivery records, job attempts, target circuit and hold state

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UID = sa.String(length=64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("sent_at", TIME, nullable=False),
        sa.Column("commitment", sa.String(length=12), nullable=True),
        sa.Column("commitment_reason", sa.Text(), nullable=True),
        sa.Column("commitment_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("job_id", "target", "sop_instance_uid"),
    )
    op.create_index("ix_deliveries_instance", "deliveries", ["sop_instance_uid"])
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("warnings", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_attempts_job_id", "job_attempts", ["job_id"])
    op.create_table(
        "target_states",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("circuit", sa.String(length=8), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", TIME, nullable=True),
        sa.Column("next_probe_at", TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_success_at", TIME, nullable=True),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("held_reason", sa.Text(), nullable=False),
        sa.Column("held_by", sa.String(length=64), nullable=False),
        sa.Column("held_at", TIME, nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("target_states")
    op.drop_index("ix_job_attempts_job_id", table_name="job_attempts")
    op.drop_table("job_attempts")
    op.drop_index("ix_deliveries_instance", table_name="deliveries")
    op.drop_table("deliveries")
