"""Cached copies as immutable versions (SPEC, "Cache"): each refresh writes a new DuckDB file holding
the table under its own schema and name, plus the plumbing columns `q` (the cache entry) and
`cache` (when the row was copied); readers open a version read-only and never see a mix.

A full refresh streams the source's rows into a new file. An incremental refresh copies the
current version, upserts by key the rows read since the last watermark (less a lag) and removes
the rows whose key is gone at the source. Either way the file is written under a temporary name
and renamed into place once complete; the entry's pointer is switched by the caller.
"""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from export_pipelines.engine.warehouse import quote_identifier

PLUMBING = ("q", "cache")
INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"})
_STAMP = "? AS q, ? AS cache"  # bound to the entry id and the time the rows were copied


class SchemaChanged(RuntimeError):
    """The source's columns differ from the cached copy's: only a full refresh can follow."""


@dataclass(frozen=True)
class RefreshFigures:
    """What a refresh did: rows in the new copy, and rows inserted, updated and deleted relative to
    the previous copy (by key; a full refresh without a key or a previous copy counts every row as
    inserted; a row is updated when it changed, which a full refresh reads off the cursor column
    where there is one), and the cursor's watermark after it."""

    rows: int
    inserted: int
    updated: int
    deleted: int
    watermark: str | None


def _select_list(columns: list[str], casts: dict[str, str]) -> str:
    """The source's columns, those read as text cast back to their exact type."""
    return ", ".join(
        f"CAST({quote_identifier(name)} AS {casts[name]}) AS {quote_identifier(name)}"
        if name in casts
        else quote_identifier(name)
        for name in columns
    )


def check_columns(columns: tuple[str, ...]) -> None:
    clash = [column for column in columns if column in PLUMBING]
    if clash:
        raise ValueError(f"the table has a column named {', '.join(clash)}, which cached copies reserve")


def watermark_text(value: Any) -> str | None:
    """A cursor value as the entry keeps it."""
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def since(watermark: str | None, cursor_type: str, lag: timedelta) -> Any:
    """Where an incremental read starts: the watermark less the lag, as a value of the cursor's
    DuckDB type in the copy (integers and text that is no time: the watermark itself)."""
    if watermark is None:
        return None
    if cursor_type.startswith("TIMESTAMP"):
        return datetime.fromisoformat(watermark) - lag
    if cursor_type == "DATE":
        return date.fromisoformat(watermark) - timedelta(days=-(-lag // timedelta(days=1)))
    if cursor_type in INTEGER_TYPES or cursor_type == "HUGEINT":
        return int(watermark)
    if cursor_type in ("FLOAT", "DOUBLE") or cursor_type.startswith("DECIMAL"):
        return float(watermark)
    try:  # text holding ISO-8601 times (SQLite): compare as text in the same spelling
        parsed = datetime.fromisoformat(watermark) - lag
    except ValueError:
        return watermark
    return parsed.isoformat(timespec="microseconds" if "." in watermark else "seconds")


def column_types(version: Path, schema: str, table: str) -> dict[str, str]:
    """The DuckDB type of each column of a version's copy of the table."""
    with duckdb.connect(str(version), read_only=True) as connection:
        relation = connection.sql(f"SELECT * FROM {quote_identifier(schema)}.{quote_identifier(table)} LIMIT 0")
        return dict(zip(relation.columns, (str(t) for t in relation.types), strict=True))


class VersionWriter:
    """Writes one new version file of a cached table; `publish` renames it into place."""

    def __init__(
        self, target: Path, schema: str, table: str, entry_id: str, copied_at: datetime, casts: dict[str, str]
    ):
        self.target, self.schema, self.table, self.casts = target, schema, table, casts
        self.entry_id, self.copied_at = entry_id, copied_at
        self.temporary = target.with_name(target.name + ".tmp")
        self.qualified = f"{quote_identifier(schema)}.{quote_identifier(table)}"

    def full(
        self, rows: pa.RecordBatchReader, key: tuple[str, ...], cursor: str | None, previous: Path | None
    ) -> RefreshFigures:
        """Every row of the source, compared by key with the previous version when there is one."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.temporary.unlink(missing_ok=True)
        with duckdb.connect(str(self.temporary)) as connection:
            connection.register("source_rows", rows)
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(self.schema)}")
            columns = _select_list(rows.schema.names, self.casts)
            connection.execute(
                f"CREATE TABLE {self.qualified} AS SELECT {columns}, {_STAMP} FROM source_rows",
                [self.entry_id, self.copied_at],
            )
            connection.unregister("source_rows")
            figures = self._compare(connection, key, previous, cursor)
            connection.execute("CHECKPOINT")
        return figures

    def _compare(
        self, connection: duckdb.DuckDBPyConnection, key: tuple[str, ...], previous: Path | None, cursor: str | None
    ) -> RefreshFigures:
        rows = connection.execute(f"SELECT count(*) FROM {self.qualified}").fetchall()[0][0]
        watermark = self._max(connection, cursor)
        if not key or previous is None:
            return RefreshFigures(rows, rows, 0, 0, watermark)
        connection.execute(f"ATTACH {_literal(previous)} AS previous (READ_ONLY)")
        try:
            old = f"previous.{self.qualified}"
            columns = [c for c in _columns(connection, self.qualified) if c not in PLUMBING]
            if columns != [c for c in _columns(connection, old) if c not in PLUMBING]:
                inserted, updated, deleted = rows, 0, _count(connection, old)
            else:
                keys = ", ".join(quote_identifier(c) for c in key)
                # A kept row counts as updated when its cursor moved (without a cursor: its values changed).
                version = (
                    quote_identifier(cursor) if cursor else "hash(" + ", ".join(map(quote_identifier, columns)) + ")"
                )
                inserted, updated, deleted = connection.execute(
                    f"""
                    SELECT count(*) FILTER (WHERE o.kept IS NULL),
                           count(*) FILTER (WHERE n.kept AND o.kept AND n.v IS DISTINCT FROM o.v),
                           count(*) FILTER (WHERE n.kept IS NULL)
                    FROM (SELECT {keys}, {version} AS v, true AS kept FROM {self.qualified}) n
                    FULL JOIN (SELECT {keys}, {version} AS v, true AS kept FROM {old}) o USING ({keys})
                    """
                ).fetchall()[0]
        finally:
            connection.execute("DETACH previous")
        return RefreshFigures(rows, inserted, updated, deleted, watermark)

    def _max(self, connection: duckdb.DuckDBPyConnection, cursor: str | None) -> str | None:
        """The cursor's largest value in the copy: the watermark of the next incremental read."""
        if cursor is None:
            return None
        return watermark_text(
            connection.execute(f"SELECT max({quote_identifier(cursor)}) FROM {self.qualified}").fetchall()[0][0]
        )

    def incremental(
        self,
        base: Path,
        changes: Callable[[], pa.RecordBatchReader],
        keys: Callable[[], pa.RecordBatchReader],
        key: tuple[str, ...],
        cursor: str,
        watermark: str | None,
        fingerprint: Callable[[], tuple[int, int]] | None = None,
    ) -> RefreshFigures:
        """The base version with the changed rows upserted by `key` and the rows whose key is gone
        at the source removed; SchemaChanged when the source's columns no longer match. `changes`,
        `fingerprint` and `keys` are read one after the other (they may share one connection).

        `fingerprint` (a single integer key): the source's (count, sum) of the key. When the upserted
        copy has the same, no key is gone and the key-only scan is skipped; it only runs when rows
        may have been deleted."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base, self.temporary)
        with duckdb.connect(str(self.temporary)) as connection:
            changed_rows = changes()
            connection.register("changed_rows", changed_rows)
            columns = _select_list(changed_rows.schema.names, self.casts)
            connection.execute(f"CREATE TEMP TABLE changes AS SELECT {columns} FROM changed_rows")
            connection.unregister("changed_rows")
            copied = [(n, t) for n, t in _columns(connection, self.qualified, typed=True) if n not in PLUMBING]
            if _columns(connection, "changes", typed=True) != copied:
                raise SchemaChanged(f"the columns of {self.schema}.{self.table} changed since the last full refresh")
            keys_sql = ", ".join(quote_identifier(c) for c in key)
            target = self.qualified

            def row_hash(alias: str) -> str:
                return "hash(" + ", ".join(f"{alias}.{quote_identifier(n)}" for n, _ in copied) + ")"

            def keys_of(alias: str) -> str:
                return ", ".join(f"{alias}.{quote_identifier(c)}" for c in key)

            connection.execute("BEGIN")
            inserted, updated = connection.execute(
                f"""
                SELECT count(*) FILTER (WHERE o.h IS NULL), count(*) FILTER (WHERE o.h <> c.h)
                FROM (SELECT {keys_of("c")}, {row_hash("c")} AS h FROM changes c) c
                LEFT JOIN (SELECT {keys_of("t")}, {row_hash("t")} AS h FROM {target} t
                           SEMI JOIN changes USING ({keys_sql})) o USING ({keys_sql})
                """
            ).fetchall()[0]
            connection.execute(
                f"DELETE FROM {target} WHERE rowid IN "
                f"(SELECT t.rowid FROM {target} t SEMI JOIN changes USING ({keys_sql}))"
            )
            connection.execute(f"INSERT INTO {target} SELECT *, {_STAMP} FROM changes", [self.entry_id, self.copied_at])
            deleted = 0
            if fingerprint is None or fingerprint() != self._fingerprint(connection, key):
                connection.register("key_rows", keys())
                connection.execute("CREATE TEMP TABLE source_keys AS SELECT * FROM key_rows")
                connection.unregister("key_rows")
                deleted = connection.execute(
                    f"DELETE FROM {target} WHERE rowid IN "
                    f"(SELECT t.rowid FROM {target} t ANTI JOIN source_keys USING ({keys_sql}))"
                ).fetchall()[0][0]
            connection.execute("COMMIT")
            rows = _count(connection, self.qualified)
            latest = self._max(connection, cursor) or watermark
            connection.execute("CHECKPOINT")
        return RefreshFigures(rows, inserted, updated, deleted, latest)

    def _fingerprint(self, connection: duckdb.DuckDBPyConnection, key: tuple[str, ...]) -> tuple[int, int]:
        (column,) = key
        count, total = connection.execute(
            f"SELECT count(*), sum({quote_identifier(column)}) FROM {self.qualified}"
        ).fetchall()[0]
        return int(count), int(total or 0)

    def publish(self) -> Path:
        """Make the written version durable under its final name."""
        with open(self.temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(self.temporary, self.target)
        return self.target

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)
        self.temporary.with_name(self.temporary.name + ".wal").unlink(missing_ok=True)


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _count(connection: duckdb.DuckDBPyConnection, qualified: str) -> int:
    return connection.execute(f"SELECT count(*) FROM {qualified}").fetchall()[0][0]


def _columns(connection: duckdb.DuckDBPyConnection, qualified: str, typed: bool = False) -> list:
    relation = connection.sql(f"SELECT * FROM {qualified} LIMIT 0")
    return [(n, str(t)) for n, t in zip(relation.columns, relation.types, strict=True)] if typed else relation.columns
