# Names used only by a framework or the standard library, never called by our code; vulture
# (scripts/check) reads this file beside src. Pydantic fields are listed by scripts/check
# itself, from the models (they are read by serialization, not by name).
from snapshots import arrivals, readiness, worker
from snapshots.store import db

_ = db  # sqlite3: `isolation_level` is set on the DB-API connection (store/db.py)
_.isolation_level
_.use_insertmanyvalues_wo_returning  # SQLAlchemy: the dialect reads it (store/db.py)
_.daemon_threads  # http.server: ThreadingHTTPServer reads it (readiness.serve_health)
_.do_GET  # http.server: the handler's GET (readiness.serve_health)
_.log_message  # http.server: the handler's logging hook
_.collect  # prometheus_client: a custom collector's method
_.ValueClass  # prometheus_client: the value class its metrics count through (metrics.setup)
_.model_post_init  # pydantic: runs after a model is validated
_.model_config  # pydantic: a model's configuration
# Alembic reads these module attributes of every migration.
_.revision
_.down_revision
_.branch_labels
_.depends_on
_.upgrade
_.downgrade
# The worker's counters: read by tests and /metrics, written by the worker.
_ = worker.Stats
_.failed
_.fallbacks
_ = readiness
# Made again from the items, for what writes inbox items by hand (bench seeds, tests).
_ = arrivals
_.recount
