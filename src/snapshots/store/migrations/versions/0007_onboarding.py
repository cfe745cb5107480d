"""onboarding: managed webhook endpoints, what a key may do, connection health

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("endpoint_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("endpoint_url", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("endpoint_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("capabilities", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("health", sa.String(20), nullable=True))
        batch.add_column(sa.Column("health_problems", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("health_checked_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        for name in (
            "health_checked_at",
            "health_problems",
            "health",
            "capabilities",
            "endpoint_pending",
            "endpoint_url",
            "endpoint_id",
        ):
            batch.drop_column(name)
