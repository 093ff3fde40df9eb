"""The service's tables, on SQLite (embedded default) and PostgreSQL alike (SQLAlchemy Core):
`export_requests` (SPEC, "Status and figures"), `api_keys` and `idempotency_keys` (REST API)."""

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class ExportStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


FINAL_STATUSES = frozenset({ExportStatus.SUCCEEDED, ExportStatus.FAILED, ExportStatus.CANCELLED, ExportStatus.EXPIRED})


class utcnow(FunctionElement):  # noqa: N801 - SQLAlchemy's naming for SQL functions
    """The current UTC time with sub-second precision, as each dialect spells it."""

    type = sa.DateTime(timezone=True)
    inherit_cache = True


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element, compiler, **kw) -> str:
    # Microseconds spelled as SQLAlchemy stores bound datetimes, so that stored and bound
    # times compare as equal text (keyset paging compares them as strings on SQLite).
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


@compiles(utcnow)
def _utcnow_default(element, compiler, **kw) -> str:
    return "CURRENT_TIMESTAMP"


metadata = sa.MetaData()

export_requests = sa.Table(
    "export_requests",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(128), nullable=False, server_default="default"),
    sa.Column("status", sa.String(16), nullable=False, server_default=ExportStatus.PENDING.value),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("format", sa.String(16)),
    sa.Column("compression", sa.String(16)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=utcnow()),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("row_count", sa.BigInteger),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("duration_ms", sa.BigInteger),
    sa.Column("files", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("run_id", sa.String(64)),
    sa.Column("user_id", sa.String(256)),
    sa.Column("user_name", sa.String(256)),
    sa.Column("api_key_prefix", sa.String(64)),
    sa.Column("client_source", sa.String(64)),
    # Beyond the SPEC: how many times the export was retried (each attempt is its own run key).
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    # Beyond the SPEC: the artifacts' base name, which the REST API's search matches.
    sa.Column("name", sa.Text),
    # Beyond the SPEC: live progress of a RUNNING export (rows written so far, of the total).
    sa.Column("rows_written", sa.BigInteger),
    sa.Column("total_rows", sa.BigInteger),
    # Beyond the SPEC: the attempt whose run a door has claimed to launch at once (one launcher), and
    # when; the request sensor leaves a freshly claimed attempt to its door.
    sa.Column("launched_attempt", sa.Integer),
    sa.Column("launch_claimed_at", sa.DateTime(timezone=True)),
    # Beyond the SPEC: runs of the export lost before they began (a killed daemon or worker host, a
    # lost broker message), each replaced by the system with a new attempt.
    sa.Column("lost_runs", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_export_requests_status_created", "status", "created_at"),
    sa.Index("ix_export_requests_project_created", "project_id", "created_at"),
)

REQUESTED_BY_COLUMNS = ("user_id", "user_name", "api_key_prefix", "client_source")


# API keys: `<prefix>.<secret>`; only the secret's SHA-256 is kept. A key without a project is a
# partner key (every project).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("prefix", sa.String(16), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("project_id", sa.String(128)),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("user_name", sa.String(256)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=utcnow()),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

# Idempotency-Key of the REST API's creates: per project, the body's hash and the export it made.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("project_id", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("export_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class CacheStatus(StrEnum):
    """Where a cache entry stands: waiting for its first copy, being refreshed, holding a copy whose
    last refresh succeeded, or whose last refresh failed (the previous copy, if any, is kept)."""

    PENDING = "PENDING"
    REFRESHING = "REFRESHING"
    READY = "READY"
    FAILED = "FAILED"


# Cached copies of catalog tables (SPEC, "Cache"): one entry per project and table, its schedules
# (JSON), and the pointer to its current version (a DuckDB file), switched in one transaction.
cache_entries = sa.Table(
    "cache_entries",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("project_id", sa.String(128), nullable=False),
    sa.Column("catalog_id", sa.String(128), nullable=False),
    sa.Column("schema_name", sa.String(256), nullable=False),
    sa.Column("table_name", sa.String(256), nullable=False),
    sa.Column("incremental_schedule", sa.Text),
    sa.Column("full_refresh_schedule", sa.Text),
    sa.Column("schedules_set_at", sa.DateTime(timezone=True), nullable=False),  # anchor of BASIC schedules
    sa.Column("status", sa.String(16), nullable=False, server_default=CacheStatus.PENDING.value),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("version_path", sa.Text),
    sa.Column("row_count", sa.BigInteger),
    sa.Column("watermark", sa.Text),
    sa.Column("last_refresh_at", sa.DateTime(timezone=True)),
    sa.Column("last_full_refresh_at", sa.DateTime(timezone=True)),
    sa.Column("refresh_requested_at", sa.DateTime(timezone=True)),
    sa.Column("refresh_requested_full", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("run_id", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("project_id", "catalog_id", "schema_name", "table_name", name="uq_cache_entries_table"),
)

# Versions replaced by a newer one (or whose entry was deleted): removed once the grace period has
# passed, so that an export that opened one just before the switch can finish reading it.
cache_retired_versions = sa.Table(
    "cache_retired_versions",
    metadata,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("entry_id", sa.String(64), nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
)
