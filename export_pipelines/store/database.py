"""One SQLAlchemy engine per database URL, and the additive migration of the service's tables."""

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import sqlalchemy as sa

from export_pipelines.store.tables import metadata


def database_problem(error: sa.exc.DBAPIError) -> str:
    """The driver's own first line of why the database failed (no SQL, no parameters)."""
    return str(error.orig or error).strip().splitlines()[0]


@cache
def engine_for(url: str) -> sa.Engine:
    """One engine per database URL per process, with the tables created on first use."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    migrate(engine)
    return engine


def migrate(engine: sa.Engine) -> list[str]:
    """Create the service's tables, or bring older ones up to date (added columns and indexes).

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
        new_columns: dict[str, list[sa.Column]] = {}
        for diff in compare_metadata(context, metadata):
            if diff[0] == "add_column":
                new_columns.setdefault(diff[2], []).append(diff[3])
        # SQLite cannot ALTER in a column with a computed default: batch mode rebuilds the table.
        recreate = "always" if engine.dialect.name == "sqlite" else "auto"
        for table, columns in new_columns.items():
            with Operations(context).batch_alter_table(table, recreate=recreate) as batch:
                for column in columns:
                    batch.add_column(column._copy())
                    changes.append(f"added column {table}.{column.name}")
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


def as_utc(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones; every stored time is UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
