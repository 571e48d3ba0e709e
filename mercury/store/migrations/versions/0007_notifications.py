"""notifications: journal cursors (the notifier follows the journal from here on)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    cursors = op.create_table(
        "journal_cursors",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # An existing index is followed from its present end: the notifier does not announce
    # what was received or failed before it existed.
    end = op.get_bind().execute(sa.text("SELECT MAX(id) FROM events")).scalar()
    op.bulk_insert(
        cursors,
        [
            {
                "name": "notifier",
                "position": int(end or 0),
                "done": [],
                "revision": 0,
                "updated_at": datetime.now(UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("journal_cursors")
