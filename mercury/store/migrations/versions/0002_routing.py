"""routing: completion state, decisions, jobs with leases

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UID = sa.String(length=64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("expected_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("completed_at", TIME, nullable=True))
        batch.add_column(sa.Column("completion_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("route_round", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="receiving")
        )
        batch.create_index("ix_series_completed_at", ["completed_at"])
        batch.create_index("ix_series_state", ["state"])
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("pending_rules", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("completed_at", TIME, nullable=True))
        batch.add_column(sa.Column("completion_reason", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="receiving")
        )
        batch.create_index("ix_studies_state", ["state"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("route_round", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_instances_unrouted", ["route_round", "series_uid"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("decided_at", TIME, nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("series_uid", UID, nullable=True),
        sa.Column("study_uid", UID, nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("triggered", sa.JSON(), nullable=False),
        sa.Column("discarded", sa.Boolean(), nullable=False),
        sa.Column("jobs", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])
    op.create_index("ix_decisions_series_uid", "decisions", ["series_uid"])
    op.create_index("ix_decisions_study_uid", "decisions", ["study_uid"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("series_uid", UID, nullable=True),
        sa.Column("study_uid", UID, nullable=False),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("modules", sa.JSON(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_claim", "jobs", ["kind", "state", "next_attempt_at"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_series_uid", "jobs", ["series_uid"])
    op.create_index("ix_jobs_study_uid", "jobs", ["study_uid"])
    op.create_table(
        "job_instances",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "sop_instance_uid"),
    )


def downgrade() -> None:
    op.drop_table("job_instances")
    op.drop_index("ix_jobs_study_uid", "jobs")
    op.drop_index("ix_jobs_series_uid", "jobs")
    op.drop_index("ix_jobs_state", "jobs")
    op.drop_index("ix_jobs_claim", "jobs")
    op.drop_table("jobs")
    op.drop_index("ix_decisions_study_uid", "decisions")
    op.drop_index("ix_decisions_series_uid", "decisions")
    op.drop_index("ix_decisions_decided_at", "decisions")
    op.drop_table("decisions")
    with op.batch_alter_table("instances") as batch:
        batch.drop_index("ix_instances_unrouted")
        batch.drop_column("route_round")
    with op.batch_alter_table("studies") as batch:
        batch.drop_index("ix_studies_state")
        for column in ("state", "completion_reason", "completed_at", "pending_rules"):
            batch.drop_column(column)
    with op.batch_alter_table("series") as batch:
        batch.drop_index("ix_series_state")
        batch.drop_index("ix_series_completed_at")
        for column in ("state", "route_round", "completion_reason", "completed_at"):
            batch.drop_column(column)
        batch.drop_column("expected_count")
