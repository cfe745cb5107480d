"""Every table, in one place. Timestamps are unix seconds (float) unless named `*_created`,
which hold Stripe's integer `created` seconds. JSON columns hold Stripe-shaped values."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("account_id", sa.String(100)),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("api_base", sa.String(500)),
    sa.Column("api_version", sa.String(100)),
    sa.Column("default_currency", sa.String(3)),
    sa.Column("ordering", sa.String(20), nullable=False, server_default="payload"),
    # Fernet tokens; the clear text never touches the database.
    sa.Column("secret_key", sa.Text, nullable=False),
    sa.Column("secret_key_last4", sa.String(4), nullable=False),
    sa.Column("webhook_secrets", sa.Text, nullable=False),  # Fernet token of a JSON list
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Onboarding (issue 9): the webhook endpoint Snapshots made in Stripe (null: a manual one),
    # whether its event list still has to be sent to Stripe, what the key may do
    # ([{name, allowed, consequence}], null: not probed) and the last connection check.
    sa.Column("endpoint_id", sa.String(255)),
    sa.Column("endpoint_url", sa.Text),
    sa.Column("endpoint_pending", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("capabilities", sa.JSON),
    sa.Column("health", sa.String(20)),  # healthy | failing (null: never checked)
    sa.Column("health_problems", sa.JSON),  # [{problem, fix}]
    sa.Column("health_checked_at", sa.Float),
)

_UNSETTLED = "status IN ('pending', 'failed', 'processing')"

inbox_items = sa.Table(
    "inbox_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("connection_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("event_created", sa.BigInteger, nullable=False),
    sa.Column("api_version", sa.String(100)),
    sa.Column("livemode", sa.Boolean, nullable=False),
    sa.Column("source", sa.String(20), nullable=False),  # webhook | test | ...
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_after", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float),
    sa.Column("locked_by", sa.String(100)),
    sa.Column("last_error", sa.Text),
    sa.Column("flows", sa.Text),  # comma-separated names of the flows that ran
    sa.Column("records", sa.Text),  # comma-separated ids of the records they wrote, in order
    sa.Column("flows_version", sa.Integer),  # the flows version a worker applied it with
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("processed_at", sa.Float),
    sa.Column("pruned_at", sa.Float),  # when retention deleted its payload (retention.py)
    # Found by (events.py): the id of the event's object and the e-mail address it carries
    # (lower-cased), set when it is stored; the cause of its last error (causes.py).
    sa.Column("object_id", sa.String(255)),
    sa.Column("email", sa.String(512)),
    sa.Column("error_cause", sa.String(200)),
    sa.UniqueConstraint("connection_id", "event_id"),
    sa.Index("ix_inbox_items_status_run_after", "status", "run_after"),
    # Retention's candidates: the items whose payload is still there, by when they settled.
    sa.Index(
        "ix_inbox_items_unpruned",
        "processed_at",
        postgresql_where=sa.text("pruned_at IS NULL"),
        sqlite_where=sa.text("pruned_at IS NULL"),
    ),
    # The newest webhook of a connection (reconciliation's silent-endpoint warning).
    sa.Index("ix_inbox_items_connection_id_received_at", "connection_id", "received_at"),
    # A status's newest first, with their causes (grouping reads the index alone).
    sa.Index("ix_inbox_items_status_id_error_cause", "status", "id", "error_cause"),
    sa.Index("ix_inbox_items_object_id", "object_id"),
    sa.Index("ix_inbox_items_email", "email"),
    # A cause's exact count, and (with the connection and arrival time) the overview's counts
    # of what waits, failed or died per connection with the oldest waiting (index alone).
    sa.Index(
        "ix_inbox_items_status_error_cause_connection_id_received_at",
        "status",
        "error_cause",
        "connection_id",
        "received_at",
    ),
)

# The claim index: only the unsettled items (a few among millions), in claim order, with what
# the claim condition reads (PostgreSQL answers `has_claimable` from it alone). Its key is the
# id as an expression (`inbox.CLAIM_ORDER`), which the claim orders by: no other index holds
# that order, so the claim reads this one (with sorts and bitmaps off in its transaction:
# `inbox._claim_postgresql`) whatever the planner's statistics say. Ordered by
# `id` itself, in the middle of a backlog (most items unsettled, the settled ones all first)
# PostgreSQL walked the primary key past every settled item: 130 ms a claim at 34,200 done.
sa.Index(
    "ix_inbox_items_claimable",
    sa.cast(inbox_items.c.id, sa.BigInteger),
    postgresql_include=["status", "run_after", "lease_until"],
    postgresql_where=sa.text(_UNSETTLED),
    sqlite_where=sa.text(_UNSETTLED),
)

# How many inbox items of a connection arrived in each hour (`received_at`), kept by the
# statement that stores them (inbox.py): the overview's 24 hourly bars read 24 of these rows
# instead of a day of the (connection_id, received_at) index. Several rows (`shard`) per hour
# and connection, summed when read: writers that store at once (serve processes on
# PostgreSQL) each add to a row picked at random, so they seldom wait on one row's lock.
inbox_arrivals = sa.Table(
    "inbox_arrivals",
    metadata,
    sa.Column("connection_id", sa.String(40), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True),  # unix seconds the hour starts at
    sa.Column("shard", sa.SmallInteger, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

# How many inbox items of a connection are `failed` or `dead` with each cause (`error_cause`;
# '' for none): the events list's failures by cause and its replay count read these rows
# instead of thousands of index entries. On SQLite, triggers on `inbox_items` (migration
# 0024) keep it in the statement that moves an item in or out of those statuses, whichever
# it is (a worker's failure, the claim of a failed item, a replay); the ordinary path of an
# event (pending, processing, done) only tests the triggers' condition. PostgreSQL leaves it
# empty and counts with the index (docs/decisions.md: concurrent writers would queue, and
# deadlock, on shared count rows).
inbox_failures = sa.Table(
    "inbox_failures",
    metadata,
    sa.Column("status", sa.String(20), primary_key=True),
    sa.Column("cause", sa.String(200), primary_key=True),
    sa.Column("connection_id", sa.String(40), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,  # the key is the table: a status's causes in one range
)

# Each inbox item's raw bytes as received, written once by intake and deleted by retention.
# Apart from the item's row because a worker rewrites that row twice (claim, settle) and SQLite
# rewrites a row whole: with the payload (4-6 KB of Stripe JSON) in it, every event went
# through SQLite's WAL three times. `item_id` is the item's id (on SQLite the table's rowid).
inbox_payloads = sa.Table(
    "inbox_payloads",
    metadata,
    sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

# The failed attempts at applying an inbox item, oldest first (written only when one fails, in
# the transaction that records the failure: an item applied at the first try has none).
inbox_attempts = sa.Table(
    "inbox_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("worker", sa.String(100)),  # the worker that made the attempt
    sa.Index("ix_inbox_attempts_item_id", "item_id"),
)

# The records each inbox item's flows wrote (the events that touched a record).
inbox_item_records = sa.Table(
    "inbox_item_records",
    metadata,
    sa.Column("item_id", sa.Integer, primary_key=True),
    sa.Column("record_id", sa.String(40), primary_key=True),
    sa.Index("ix_inbox_item_records_record_id", "record_id"),
)

# Every record remembers the newest event applied to it as an ordering key:
# (authority, event created second, state and type rank, event id); see records.py.
_ORDERING = (
    ("applied_authority", sa.SmallInteger),
    ("applied_created", sa.BigInteger),
    ("applied_rank", sa.Integer),
    ("applied_event_id", sa.String(255)),
)


def _ordering_columns() -> list[sa.Column[object]]:
    return [sa.Column(name, kind) for name, kind in _ORDERING]


contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("connection_id", sa.String(40)),
    sa.Column("stripe_customer_id", sa.String(255)),
    sa.Column("email", sa.String(512)),
    sa.Column("name", sa.String(512)),
    sa.Column("phone", sa.String(100)),
    sa.Column("address", sa.JSON),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("custom", sa.JSON),  # custom fields a flow maps (`custom.plan`)
    sa.Column("field_versions", sa.JSON),  # per field or tag: the newest event that set it
    sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("livemode", sa.Boolean),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("stripe_created", sa.BigInteger),
    *_ordering_columns(),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("connection_id", "stripe_customer_id"),
    sa.Index("ix_contacts_email", "email"),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("connection_id", sa.String(40), nullable=False),
    sa.Column("stripe_invoice_id", sa.String(255), nullable=False),
    sa.Column("stripe_customer_id", sa.String(255)),
    sa.Column("customer_id", sa.String(40)),  # the contact
    sa.Column("number", sa.String(255)),
    sa.Column("amount_due", sa.BigInteger),
    sa.Column("amount_paid", sa.BigInteger),
    sa.Column("amount_remaining", sa.BigInteger),
    sa.Column("total", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("status", sa.String(30)),
    sa.Column("payment_status", sa.String(30)),
    sa.Column("customer_email", sa.String(512)),
    sa.Column("customer_name", sa.String(512)),
    sa.Column("hosted_invoice_url", sa.Text),
    sa.Column("due_date", sa.BigInteger),
    sa.Column("paid_at", sa.BigInteger),
    sa.Column("notes", sa.Text),  # written through the API only
    sa.Column("field_versions", sa.JSON),  # per field: the newest write that set it
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("custom", sa.JSON),
    sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("livemode", sa.Boolean),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("stripe_created", sa.BigInteger),
    *_ordering_columns(),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("connection_id", "stripe_invoice_id"),
    sa.Index("ix_invoices_customer_id", "customer_id"),
)

locations = sa.Table(
    "locations",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("connection_id", sa.String(40)),
    sa.Column("stripe_location_id", sa.String(255)),
    sa.Column("name", sa.String(512)),
    sa.Column("address", sa.JSON),
    sa.Column("country", sa.String(2)),
    sa.Column("currency", sa.String(3)),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("custom", sa.JSON),
    sa.Column("field_versions", sa.JSON),
    sa.Column("archived", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("livemode", sa.Boolean),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    *_ordering_columns(),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("connection_id", "stripe_location_id"),
)

# Record lists are searched by the start of these columns, in any case (records.reads).
sa.Index("ix_contacts_lower_name", sa.func.lower(contacts.c.name))
sa.Index("ix_contacts_lower_email", sa.func.lower(contacts.c.email))
sa.Index("ix_invoices_lower_number", sa.func.lower(invoices.c.number))
sa.Index("ix_invoices_lower_customer_email", sa.func.lower(invoices.c.customer_email))
sa.Index("ix_invoices_lower_customer_name", sa.func.lower(invoices.c.customer_name))
sa.Index("ix_locations_lower_name", sa.func.lower(locations.c.name))

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(40), nullable=False),  # shown in lists: snp_live_abcd…
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # sha256 hex
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("last_used_at", sa.Float),
    sa.Column("last_used_ip", sa.String(64)),
    sa.Column("revoked_at", sa.Float),
    sa.Column("rotated_from", sa.String(40)),  # the key this one replaced
    # The connections whose records and events the key may see (null: every connection).
    sa.Column("connections", sa.JSON),
)

audit_entries = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target", sa.String(200)),
    sa.Column("outcome", sa.String(20), nullable=False, server_default="ok"),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("request_id", sa.String(64)),
    sa.Column("ip", sa.String(64)),
    sa.Index("ix_audit_entries_at", "at"),
)

# Pulling from Stripe (sync.py, watcher.py, schedule.py).

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("connection_id", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # backfill | reconcile
    sa.Column("object", sa.String(40), nullable=False),  # customers | invoices | events | ...
    sa.Column("since", sa.BigInteger),  # only objects (events) created at or after
    sa.Column("status", sa.String(20), nullable=False),  # running | done | failed | interrupted
    sa.Column("cursor", sa.String(255)),  # the last object of the last committed page
    sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("objects", sa.Integer, nullable=False, server_default="0"),  # read
    sa.Column("enqueued", sa.Integer, nullable=False, server_default="0"),  # new inbox items
    sa.Column("holder", sa.String(100)),  # the process running it
    sa.Column("lease_until", sa.Float),  # it counts as running until then (a heartbeat)
    sa.Column("error", sa.Text),
    sa.Column("warning", sa.Text),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_sync_runs_connection_id_object_status", "connection_id", "object", "status"),
)

# Periodic jobs shared by every process: one holder at a time, and when each runs next.
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("name", sa.String(120), primary_key=True),  # e.g. watcher:conn_...
    sa.Column("holder", sa.String(100)),
    sa.Column("lease_until", sa.Float),
    sa.Column("next_run_at", sa.Float, nullable=False),
    sa.Column("last_run_at", sa.Float),
    sa.Column("last_error", sa.Text),
)

# What the location watcher saw last: one fingerprint per Stripe location.
watched_locations = sa.Table(
    "watched_locations",
    metadata,
    sa.Column("connection_id", sa.String(40), primary_key=True),
    sa.Column("stripe_location_id", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
)

# No-code flows (flows.py): every version of the flows file ever in force.
flow_versions = sa.Table(
    "flow_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text, nullable=False),  # the YAML as imported
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("comment", sa.String(500)),
    sa.Column("created_at", sa.Float, nullable=False),
)

# A contact's timeline (the `log_event` action).
activities = sa.Table(
    "activities",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("connection_id", sa.String(40), nullable=False),
    sa.Column("contact_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("flow", sa.String(100), nullable=False),
    sa.Column("type", sa.String(255), nullable=False),  # the kind of activity (an event type)
    sa.Column("title", sa.String(512)),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("occurred_at", sa.BigInteger, nullable=False),  # the event's `created`
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("contact_id", "event_id", "flow"),
    sa.Index("ix_activities_contact_id_occurred_at", "contact_id", "occurred_at"),
)

# The API (issue 5): idempotent writes and per-key rate limits, shared by every process.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("api_key_id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),  # the Idempotency-Key header
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("path", sa.String(500), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),  # sha256 of method, path, body
    sa.Column("status_code", sa.Integer),  # null while the first request is running
    sa.Column("response", sa.Text),  # its JSON body
    sa.Column("created_at", sa.Float, nullable=False),
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("bucket", sa.String(200), primary_key=True),  # key:<id>, audit:<kind>:<ip>, ...
    sa.Column("window_start", sa.BigInteger, primary_key=True),  # unix seconds
    sa.Column("count", sa.Integer, nullable=False),
)

# Bulk replays of inbox items (replay.py): one row per run, with its filter and progress.
replay_jobs = sa.Table(
    "replay_jobs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("filter", sa.JSON, nullable=False),  # status, since, type, error, connection_id
    sa.Column("status", sa.String(20), nullable=False),  # queued | running | done | failed
    sa.Column("matched", sa.Integer, nullable=False),  # items matching when it was made
    sa.Column("quota", sa.Integer, nullable=False),  # how many it re-queues at most (the cap)
    sa.Column("requeued", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_item_id", sa.Integer, nullable=False, server_default="0"),  # the cursor
    sa.Column("max_item_id", sa.Integer, nullable=False),  # items newer than the job are left
    sa.Column("top_errors", sa.JSON, nullable=False),  # [[error, count], ...] when it was made
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("holder", sa.String(100)),  # the process running it
    sa.Column("lease_until", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_replay_jobs_status", "status"),
)

# The console (issue 10): its users, their sessions, and one-time set-up links.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),  # lower case
    sa.Column("password_hash", sa.String(200), nullable=False),  # argon2id, PHC string
    sa.Column("role", sa.String(20), nullable=False),  # admin | viewer
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # sha256 of the cookie
    sa.Column(
        "user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # the absolute end
    sa.Column("last_seen_at", sa.Float, nullable=False),  # for the idle timeout
    sa.Column("confirmed_at", sa.Float, nullable=False),  # the password was last typed
    sa.Column("ip", sa.String(64)),
    sa.Index("ix_console_sessions_user_id", "user_id"),
)

setup_links = sa.Table(
    "setup_links",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),  # sha256 of the link's token
    sa.Column("role", sa.String(20), nullable=False),  # the role of the user it makes
    sa.Column("email", sa.String(254)),  # set: for this user (a new password); null: any
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float),
)

# Sync runs asked for in the console, which a worker (or serve's embedded one) starts.
sync_requests = sa.Table(
    "sync_requests",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("connection_id", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # backfill | reconcile
    sa.Column("objects", sa.JSON, nullable=False),  # customers, invoices, locations (backfill)
    sa.Column("since", sa.BigInteger),
    sa.Column("status", sa.String(20), nullable=False),  # requested | running | done | failed
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("holder", sa.String(100)),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_sync_requests_status", "status"),
)


# Outbound workflows (issue 11, outbound/): endpoints, the deliveries the flows write in their
# own transaction (an outbox), every attempt, and the waits of flows with steps.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("description", sa.String(500)),
    sa.Column("secrets", sa.Text, nullable=False),  # Fernet token of [{secret, expires_at}]
    sa.Column("status", sa.String(20), nullable=False),  # enabled | disabled
    sa.Column("disabled_reason", sa.String(500)),
    sa.Column("disabled_at", sa.Float),
    sa.Column("last_success_at", sa.Float),
    sa.Column("failing_since", sa.Float),  # the first failed attempt after the last success
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),  # since a success
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# A delivery is one message to one endpoint: its body is stored once and resent byte for byte,
# and its id is the `webhook-id` of every attempt.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("endpoint_id", sa.String(40), nullable=False),
    # What made it: (connection, event, flow, step) is the key that makes it once.
    sa.Column("connection_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("flow", sa.String(100), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("type", sa.String(255), nullable=False),  # the message type
    sa.Column("body", sa.LargeBinary, nullable=False),
    # pending | processing | succeeded | failed (retried) | dead | held (endpoint disabled)
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_after", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float),
    sa.Column("locked_by", sa.String(100)),
    sa.Column("last_error", sa.Text),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("succeeded_at", sa.Float),
    sa.UniqueConstraint("connection_id", "event_id", "flow", "step"),
    sa.Index("ix_deliveries_status_run_after", "status", "run_after"),
    sa.Index("ix_deliveries_endpoint_id_status", "endpoint_id", "status"),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(40), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("duration", sa.Float, nullable=False),  # seconds
    sa.Column("address", sa.String(100)),  # the address connected to
    sa.Column("status_code", sa.Integer),
    # timeout | connect | dns | blocked | tls | redirect | http (a non-2xx status); null: success
    sa.Column("error_kind", sa.String(20)),
    sa.Column("error", sa.Text),
    sa.Column("response", sa.Text),  # the first 8 KiB of the response body
    sa.Column("worker", sa.String(100)),
    sa.Index("ix_delivery_attempts_delivery_id", "delivery_id"),
)

# A flow with steps that reached a `wait`: the rest of its steps run when it is due.
waits = sa.Table(
    "waits",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("connection_id", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(255), nullable=False),  # the source event
    sa.Column("flow", sa.String(100), nullable=False),
    sa.Column("flow_version", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),  # the index of the step after the wait
    sa.Column("record_kind", sa.String(20)),  # contact | invoice | location
    sa.Column("record_id", sa.String(40)),
    sa.Column("due_at", sa.Float, nullable=False),
    # waiting | processing | done | skipped | cancelled | failed
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_until", sa.Float),
    sa.Column("locked_by", sa.String(100)),
    sa.Column("reason", sa.Text),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.UniqueConstraint("connection_id", "event_id", "flow", "step"),
    sa.Index("ix_waits_status_due_at", "status", "due_at"),
)
