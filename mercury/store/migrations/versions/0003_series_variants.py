"""series variants: the distinct tag sets of a series, for every_instance rules

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UID = sa.String(length=64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "series_variants",
        sa.Column("series_uid", UID, nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("series_uid", "digest"),
    )


def downgrade() -> None:
    op.drop_table("series_variants")
