"""safe operations: bulk replay jobs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replay_jobs",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("requeued", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_item_id", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_item_id", sa.Integer(), nullable=False),
        sa.Column("top_errors", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_replay_jobs")),
        sa.UniqueConstraint("id", name=op.f("uq_replay_jobs_id")),
    )
    op.create_index("ix_replay_jobs_status", "replay_jobs", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_replay_jobs_status", table_name="replay_jobs")
    op.drop_table("replay_jobs")
