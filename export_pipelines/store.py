"""The `export_requests` table (SPEC, "Status and figures"): schema and status transitions.

SQLAlchemy Core, so the same code runs on SQLite (embedded default) and PostgreSQL.
"""

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from export_pipelines.settings import env


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
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"


@compiles(utcnow)
def _utcnow_default(element, compiler, **kw) -> str:
    return "CURRENT_TIMESTAMP"


class ExportConflict(ValueError):
    """The export exists in a state that does not allow what was asked."""


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
    sa.Index("ix_export_requests_status_created", "status", "created_at"),
    sa.Index("ix_export_requests_project_created", "project_id", "created_at"),
)

REQUESTED_BY_COLUMNS = ("user_id", "user_name", "api_key_prefix", "client_source")


@cache
def engine_for(url: str) -> sa.Engine:
    """One engine per database URL per process, with the table created on first use."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    migrate(engine)
    return engine


def migrate(engine: sa.Engine) -> list[str]:
    """Create export_requests, or bring an older one up to date (added columns and indexes).

    Returns what was changed. Alembic's comparison finds the differences; only additive ones
    are applied, so no data is ever dropped.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    metadata.create_all(engine)
    changes = []
    with engine.begin() as connection:
        context = MigrationContext.configure(connection)
        diffs = compare_metadata(context, metadata)
        new_columns = [diff[3] for diff in diffs if diff[0] == "add_column"]
        if new_columns:
            # SQLite cannot ALTER in a column with a computed default: batch mode rebuilds the table.
            recreate = "always" if engine.dialect.name == "sqlite" else "auto"
            with Operations(context).batch_alter_table(export_requests.name, recreate=recreate) as batch:
                for column in new_columns:
                    batch.add_column(column._copy())
                    changes.append(f"added column {export_requests.name}.{column.name}")
        for diff in compare_metadata(context, metadata):
            if diff[0] == "add_index":
                diff[1].create(connection)
                changes.append(f"added index {diff[1].name}")
    return changes


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ExportStore:
    """Reads and moves rows of `export_requests`."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def insert(
        self,
        export_id: str,
        project_id: str,
        request: Mapping[str, Any],
        requested_by: Mapping[str, str | None] | None = None,
    ) -> None:
        """A new PENDING export, as a producer inserts it."""
        with self.engine.begin() as connection:
            connection.execute(export_requests.insert().values(_new_row(export_id, project_id, request, requested_by)))

    def get(self, export_id: str) -> dict[str, Any] | None:
        return self._first(export_requests.c.id == export_id)

    def find_by_run(self, run_id: str) -> dict[str, Any] | None:
        return self._first(export_requests.c.run_id == run_id)

    def _first(self, condition: sa.ColumnElement[bool]) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(export_requests).where(condition)).mappings().first()
        return _decode(row) if row is not None else None

    def start(
        self,
        export_id: str,
        project_id: str,
        request: Mapping[str, Any],
        requested_by: Mapping[str, str | None] | None,
        run_id: str,
    ) -> None:
        """Mark the export RUNNING for `run_id`, creating its row for runs launched without one.

        Raises ExportConflict when the export already finished or another run is working on it.
        """
        with self.engine.begin() as connection:
            existing = connection.execute(
                sa.select(export_requests.c.status, export_requests.c.run_id)
                .where(export_requests.c.id == export_id)
                .with_for_update()
            ).first()
            if existing is None:
                connection.execute(
                    export_requests.insert().values(_new_row(export_id, project_id, request, requested_by))
                )
            elif existing.status in (ExportStatus.SUCCEEDED, ExportStatus.EXPIRED, ExportStatus.CANCELLED) or (
                existing.status == ExportStatus.RUNNING and existing.run_id not in (None, run_id)
            ):
                raise ExportConflict(f"export {export_id} is already {existing.status}")
            # A producer's row keeps what it says about the requester; the run fills the gaps.
            fill = {
                k: sa.func.coalesce(export_requests.c[k], v)
                for k, v in (requested_by or {}).items()
                if k in REQUESTED_BY_COLUMNS and v is not None
            }
            connection.execute(
                export_requests.update()
                .where(export_requests.c.id == export_id)
                .values(
                    status=ExportStatus.RUNNING.value,
                    run_id=run_id,
                    started_at=_now(),
                    finished_at=None,
                    error=None,
                    **fill,
                )
            )

    def describe(self, export_id: str, source: str, format: str, compression: str) -> None:
        """Record the resolved source, format and compression."""
        self._update(export_id, source=source, format=format, compression=compression)

    def succeed(self, export_id: str, row_count: int, byte_count: int, duration_ms: int, files: list[dict]) -> None:
        self._update(
            export_id,
            status=ExportStatus.SUCCEEDED.value,
            finished_at=_now(),
            row_count=row_count,
            bytes=byte_count,
            duration_ms=duration_ms,
            files=json.dumps(files),
            error=None,
        )

    def finish_unfinished(self, export_id: str, status: ExportStatus, error: str | None) -> bool:
        """Move a PENDING or RUNNING export to a final status; False when it had one already."""
        return self.finish_unfinished_if(export_id, (ExportStatus.PENDING, ExportStatus.RUNNING), status, error)

    def finish_unfinished_if(
        self,
        export_id: str,
        current: ExportStatus | tuple[ExportStatus, ...],
        status: ExportStatus,
        error: str | None,
    ) -> bool:
        """Move the export to `status` only if it is in `current` (atomically); True if it moved."""
        current = current if isinstance(current, tuple) else (current,)
        with self.engine.begin() as connection:
            result = connection.execute(
                export_requests.update()
                .where(export_requests.c.id == export_id, export_requests.c.status.in_([c.value for c in current]))
                .values(status=status.value, finished_at=_now(), error=error)
            )
        return result.rowcount == 1

    def pending(
        self, created_since: datetime | None, limit: int, created_before: datetime | None = None
    ) -> list[dict[str, Any]]:
        """PENDING exports, oldest first (ties broken by id), created in [created_since, created_before)."""
        query = sa.select(export_requests).where(export_requests.c.status == ExportStatus.PENDING.value)
        if created_since is not None:
            query = query.where(export_requests.c.created_at >= created_since)
        if created_before is not None:
            query = query.where(export_requests.c.created_at < created_before)
        query = query.order_by(export_requests.c.created_at, export_requests.c.id).limit(limit)
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def running(self, limit: int) -> list[dict[str, Any]]:
        """RUNNING exports, oldest first: the ones whose run may have ended unseen."""
        query = (
            sa.select(export_requests)
            .where(export_requests.c.status == ExportStatus.RUNNING.value)
            .order_by(export_requests.c.started_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def retry(self, export_id: str) -> int:
        """Queue a FAILED or CANCELLED export again as a new attempt; returns the attempt number."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(export_requests.c.status, export_requests.c.attempt)
                .where(export_requests.c.id == export_id)
                .with_for_update()
            ).first()
            if row is None:
                raise KeyError(export_id)
            if row.status not in (ExportStatus.FAILED, ExportStatus.CANCELLED):
                raise ExportConflict(
                    f"export {export_id} is {row.status}; only FAILED or CANCELLED exports are retried"
                )
            attempt = row.attempt + 1
            connection.execute(
                export_requests.update()
                .where(export_requests.c.id == export_id)
                .values(
                    status=ExportStatus.PENDING.value,
                    attempt=attempt,
                    error=None,
                    run_id=None,
                    started_at=None,
                    finished_at=None,
                )
            )
        return attempt

    def list_exports(
        self, project_id: str, statuses: list[str] | None, limit: int, created_before: datetime | None
    ) -> list[dict[str, Any]]:
        """A project's exports, newest first, `limit` of them, created before the keyset cursor."""
        query = sa.select(export_requests).where(export_requests.c.project_id == project_id)
        if statuses:
            query = query.where(export_requests.c.status.in_(statuses))
        if created_before is not None:
            query = query.where(export_requests.c.created_at < created_before)
        query = query.order_by(export_requests.c.created_at.desc(), export_requests.c.id.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [_decode(row) for row in connection.execute(query).mappings()]

    def delete(self, export_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(export_requests.delete().where(export_requests.c.id == export_id))

    def _update(self, export_id: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(export_requests.update().where(export_requests.c.id == export_id).values(**values))


def _new_row(
    export_id: str, project_id: str, request: Mapping[str, Any], requested_by: Mapping[str, str | None] | None
) -> dict[str, Any]:
    return {
        "id": export_id,
        "project_id": project_id,
        "request": json.dumps(request),
        **{k: v for k, v in (requested_by or {}).items() if k in REQUESTED_BY_COLUMNS},
    }


def run_key(record: Mapping[str, Any]) -> str:
    """The Dagster run key of an export's current attempt (a retry needs a key of its own)."""
    return record["id"] if not record["attempt"] else f"{record['id']}.attempt-{record['attempt']}"


def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    record = dict(row)
    for key in ("created_at", "started_at", "finished_at"):
        record[key] = _as_utc(record[key])
    record["files"] = json.loads(record["files"]) if record["files"] else []
    return record


class ExportStoreResource(dg.ConfigurableResource):
    """The request table's database."""

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the export_requests database. Default: $EXPORTS_DATABASE_URL, "
        "else sqlite:///.data/exports.db.",
    )

    def get_store(self) -> ExportStore:
        return ExportStore(engine_for(self.database_url or env("EXPORTS_DATABASE_URL")))
