"""no-code flows: flow versions, activities, custom fields, per-field versions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_flow_versions")),
    )
    op.create_table(
        "activities",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("connection_id", sa.String(length=40), nullable=False),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("flow", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("title", sa.String(length=512), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("test", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_activities")),
        sa.UniqueConstraint("id", name=op.f("uq_activities_id")),
        sa.UniqueConstraint(
            "contact_id", "event_id", "flow", name=op.f("uq_activities_contact_id_event_id_flow")
        ),
    )
    op.create_index(
        "ix_activities_contact_id_occurred_at",
        "activities",
        ["contact_id", "occurred_at"],
        unique=False,
    )
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("custom", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("field_versions", sa.JSON(), nullable=True))
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("custom", sa.JSON(), nullable=True))
    with op.batch_alter_table("locations") as batch:
        batch.add_column(sa.Column("custom", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("field_versions", sa.JSON(), nullable=True))
    with op.batch_alter_table("inbox_items") as batch:
        batch.add_column(sa.Column("records", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_items") as batch:
        batch.drop_column("records")
    with op.batch_alter_table("locations") as batch:
        batch.drop_column("field_versions")
        batch.drop_column("custom")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("custom")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("field_versions")
        batch.drop_column("custom")
    op.drop_index("ix_activities_contact_id_occurred_at", table_name="activities")
    op.drop_table("activities")
    op.drop_table("flow_versions")
