"""pull from Stripe: sync runs, schedules, watched locations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("object", sa.String(length=40), nullable=False),
        sa.Column("since", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("cursor", sa.String(length=255), nullable=True),
        sa.Column("pages", sa.Integer(), server_default="0", nullable=False),
        sa.Column("objects", sa.Integer(), server_default="0", nullable=False),
        sa.Column("enqueued", sa.Integer(), server_default="0", nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("warning", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_sync_runs")),
        sa.UniqueConstraint("id", name=op.f("uq_sync_runs_id")),
    )
    op.create_index(
        "ix_sync_runs_connection_id_object_status",
        "sync_runs",
        ["connection_id", "object", "status"],
        unique=False,
    )
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("next_run_at", sa.Float(), nullable=False),
        sa.Column("last_run_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedules")),
    )
    op.create_table(
        "watched_locations",
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("stripe_location_id", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "connection_id", "stripe_location_id", name=op.f("pk_watched_locations")
        ),
    )
    op.create_index(
        "ix_inbox_items_connection_id_received_at",
        "inbox_items",
        ["connection_id", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_items_connection_id_received_at", table_name="inbox_items")
    op.drop_table("watched_locations")
    op.drop_table("schedules")
    op.drop_index("ix_sync_runs_connection_id_object_status", table_name="sync_runs")
    op.drop_table("sync_runs")
