"""event lookup: inbox items found by object id, e-mail and error cause; the records each
wrote; records searched by the start of their name, e-mail or number

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 2000
# Record columns searched by their start in any case: an index on each one's lower case.
SEARCHED = (
    ("contacts", "name"),
    ("contacts", "email"),
    ("invoices", "number"),
    ("invoices", "customer_email"),
    ("invoices", "customer_name"),
    ("locations", "name"),
)

# A copy of causes.of as it was when this migration was written (migrations never import the
# code that may change after them).
_VARIABLE = (
    # jmespath names the value a function refused: the value, not the fault.
    (re.compile(r"(invalid type for value: ).*?(, expected)", re.DOTALL), r"\1<value>\2"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    # An id has a digit or a capital in its random part (a field name such as `payment_status`
    # has none).
    (re.compile(r"\b[a-z]{2,8}_(?:test_|live_)?(?=[a-z]*[A-Z0-9])[A-Za-z0-9]{6,}\b"), "<id>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])"), "<n>"),
)


def _cause(error: str | None) -> str | None:
    if not error:
        return None
    text = " ".join(error.split())
    for pattern, placeholder in _VARIABLE:
        text = pattern.sub(placeholder, text)
    return text[:200]


def _lookup(payload: bytes) -> tuple[str | None, str | None]:
    try:
        event = json.loads(payload)
    except ValueError:
        return None, None
    data = event.get("data") if isinstance(event, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return None, None
    object_id = obj.get("id")
    email = obj.get("email") or obj.get("customer_email")
    return (
        object_id[:255] if isinstance(object_id, str) and object_id else None,
        email.strip().lower()[:512] if isinstance(email, str) and email.strip() else None,
    )


def _backfill() -> None:
    bind = op.get_bind()
    items = sa.table(
        "inbox_items",
        sa.column("id", sa.Integer),
        sa.column("payload", sa.LargeBinary),
        sa.column("last_error", sa.Text),
        sa.column("records", sa.Text),
        sa.column("object_id", sa.String),
        sa.column("email", sa.String),
        sa.column("error_cause", sa.String),
    )
    links = sa.table("inbox_item_records", sa.column("item_id"), sa.column("record_id"))
    update = (
        items.update()
        .where(items.c.id == sa.bindparam("b_id"))
        .values(
            object_id=sa.bindparam("b_object_id"),
            email=sa.bindparam("b_email"),
            error_cause=sa.bindparam("b_cause"),
        )
    )
    after = 0
    while True:
        rows = bind.execute(
            sa.select(items.c.id, items.c.payload, items.c.last_error, items.c.records)
            .where(items.c.id > after)
            .order_by(items.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        changes: list[dict[str, Any]] = []
        touched: list[dict[str, Any]] = []
        for row in rows:
            object_id, email = _lookup(bytes(row.payload))
            changes.append(
                {
                    "b_id": row.id,
                    "b_object_id": object_id,
                    "b_email": email,
                    "b_cause": _cause(row.last_error),
                }
            )
            for record_id in dict.fromkeys((row.records or "").split(",")):
                if record_id:
                    touched.append({"item_id": row.id, "record_id": record_id[:40]})
        bind.execute(update, changes)
        if touched:
            bind.execute(links.insert(), touched)
        after = rows[-1].id


def upgrade() -> None:
    with op.batch_alter_table("inbox_items") as batch:
        batch.add_column(sa.Column("object_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("email", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("error_cause", sa.String(length=200), nullable=True))
    op.create_table(
        "inbox_item_records",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "record_id", name=op.f("pk_inbox_item_records")),
    )
    _backfill()
    op.create_index(
        "ix_inbox_items_status_id_error_cause", "inbox_items", ["status", "id", "error_cause"]
    )
    op.create_index("ix_inbox_items_object_id", "inbox_items", ["object_id"])
    op.create_index("ix_inbox_items_email", "inbox_items", ["email"])
    op.create_index("ix_inbox_items_status_error_cause", "inbox_items", ["status", "error_cause"])
    op.create_index(
        "ix_inbox_item_records_record_id", "inbox_item_records", ["record_id"], unique=False
    )
    for table, column in SEARCHED:
        op.create_index(f"ix_{table}_lower_{column}", table, [sa.text(f"lower({column})")])


def downgrade() -> None:
    for table, column in SEARCHED:
        op.drop_index(f"ix_{table}_lower_{column}", table_name=table)
    op.drop_index("ix_inbox_item_records_record_id", table_name="inbox_item_records")
    op.drop_table("inbox_item_records")
    for name in ("status_error_cause", "email", "object_id", "status_id_error_cause"):
        op.drop_index(f"ix_inbox_items_{name}", table_name="inbox_items")
    with op.batch_alter_table("inbox_items") as batch:
        batch.drop_column("error_cause")
        batch.drop_column("email")
        batch.drop_column("object_id")
