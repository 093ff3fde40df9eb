"""Reading a catalog's tables into Arrow (SPEC, "Cache"): their columns and keys through SQLAlchemy's
inspector, their rows through ADBC, which streams Arrow record batches (PostgreSQL: binary COPY),
never row by row. PostgreSQL and SQLite catalogs are supported.

Identifiers are looked up in the catalog and quoted by the dialect; values are bound parameters.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import adbc_driver_manager
import pyarrow as pa
import sqlalchemy as sa

from export_pipelines.cache.catalogs import Catalog


class CatalogUnavailable(OSError):
    """The catalog's database cannot be reached or read; the message never holds its password."""


class UnknownCatalogTable(LookupError):
    """No such schema or table in the catalog; the message names what exists."""


@dataclass(frozen=True)
class TableInfo:
    """A catalog table as the inspector sees it; `decimals` holds the (precision, scale) of its exact
    numeric columns (None where unbounded)."""

    schema: str
    name: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    decimals: tuple[tuple[str, int | None, int | None], ...] = ()

    def duckdb_casts(self) -> dict[str, str]:
        """The DuckDB type of each exact numeric column, which is read as text (the ADBC driver turns
        NUMERIC into text anyway, at a third of the whole read's cost; the database does it faster)."""
        return {
            name: f"DECIMAL({precision},{scale or 0})" if precision and precision <= 38 else "DOUBLE"
            for name, precision, scale in self.decimals
        }


def scrubbed(catalog: Catalog, error: BaseException) -> str:
    """An error's message with the catalog's password taken out."""
    message = f"{type(error).__name__}: {error}".splitlines()[0]
    password = sa.make_url(catalog.url).password
    return message.replace(password, "***") if password else message


class CatalogReader:
    """One catalog's database: what tables it has, and their rows as Arrow batches."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.url = sa.make_url(catalog.url)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("postgresql", "sqlite"):
            raise CatalogUnavailable(
                f"catalog {catalog.id} is a {self.backend} database; PostgreSQL and SQLite catalogs are supported"
            )

    def _quote(self, name: str) -> str:
        return self._dialect().identifier_preparer.quote(name)

    def _dialect(self) -> sa.Dialect:
        return self.url.get_dialect()()

    def table(self, schema: str, name: str) -> TableInfo:
        """The table's columns and primary key, or UnknownCatalogTable naming what exists."""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            inspector = sa.inspect(engine)
            schemas = inspector.get_schema_names()
            if schema not in schemas:
                shown = ", ".join(s for s in schemas if s not in ("information_schema", "pg_catalog", "pg_toast"))
                raise UnknownCatalogTable(f"catalog {self.catalog.id} has no schema {schema!r}; schemas: {shown}")
            tables = inspector.get_table_names(schema) + inspector.get_view_names(schema)
            if name not in tables:
                shown = ", ".join(sorted(tables)) or "none"
                raise UnknownCatalogTable(f"catalog {self.catalog.id} has no table {schema}.{name}; tables: {shown}")
            described = inspector.get_columns(name, schema)
            primary_key = tuple(inspector.get_pk_constraint(name, schema).get("constrained_columns") or ())
        except sa.exc.SQLAlchemyError as error:
            raise CatalogUnavailable(
                f"catalog {self.catalog.id} cannot be read: {scrubbed(self.catalog, error)}"
            ) from None
        finally:
            engine.dispose()
        decimals = tuple(
            (column["name"], column["type"].precision, column["type"].scale)
            for column in described
            if isinstance(column["type"], sa.Numeric) and not isinstance(column["type"], sa.Float)
        )
        return TableInfo(schema, name, tuple(column["name"] for column in described), primary_key, decimals)

    def qualified(self, table: TableInfo) -> str:
        return f"{self._quote(table.schema)}.{self._quote(table.name)}"

    @contextmanager
    def snapshot(self) -> Iterator["Snapshot"]:
        """A read-only connection whose statements all see one snapshot of the database."""
        try:
            if self.backend == "postgresql":
                import adbc_driver_postgresql.dbapi as driver

                connection = driver.connect(self.url.set(drivername="postgresql").render_as_string(hide_password=False))
            else:
                import adbc_driver_sqlite.dbapi as driver

                connection = driver.connect(f"file:{self.url.database}?mode=ro")
        except Exception as error:  # the driver's own error classes
            raise CatalogUnavailable(
                f"catalog {self.catalog.id} ({self.catalog.display_url}) cannot be reached: "
                f"{scrubbed(self.catalog, error)}"
            ) from None
        try:
            cursor = connection.cursor()  # in a transaction: ADBC's DB-API connections do not autocommit
            if self.backend == "postgresql":
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield Snapshot(self, cursor)
            connection.rollback()
        except adbc_driver_manager.Error as error:
            raise CatalogUnavailable(
                f"reading catalog {self.catalog.id} failed: {scrubbed(self.catalog, error)}"
            ) from None
        finally:
            connection.close()


class Snapshot:
    """Statements on one consistent snapshot of a catalog's database."""

    def __init__(self, reader: CatalogReader, cursor: Any):
        self.reader, self.cursor = reader, cursor

    def _placeholder(self) -> str:
        return "$1" if self.reader.backend == "postgresql" else "?"

    def rows(self, table: TableInfo, cursor_column: str | None = None, since: Any = None) -> pa.RecordBatchReader:
        """Every row of `table`, or those whose `cursor_column` is at or after `since` (exact numerics
        as text: see `TableInfo.duckdb_casts`)."""
        quote, as_text = self.reader._quote, table.duckdb_casts()
        columns = ", ".join(
            f"CAST({quote(column)} AS TEXT) AS {quote(column)}" if column in as_text else quote(column)
            for column in table.columns
        )
        query = f"SELECT {columns} FROM {self.reader.qualified(table)}"
        if cursor_column is None:
            self.cursor.execute(query)
        else:
            query += f" WHERE {self.reader._quote(cursor_column)} >= {self._placeholder()}"
            self.cursor.execute(query, parameters=(since,))
        return self.cursor.fetch_record_batch()

    def key_fingerprint(self, table: TableInfo, key_column: str) -> tuple[int, int]:
        """The count of rows and the sum of an integer key column (one aggregate, nothing transferred)."""
        column = self.reader._quote(key_column)
        self.cursor.execute(f"SELECT count(*), sum({column}) FROM {self.reader.qualified(table)}")
        count, total = self.cursor.fetchone()
        return int(count), int(Decimal(str(total))) if total is not None else 0

    def keys(self, table: TableInfo, key_columns: tuple[str, ...]) -> pa.RecordBatchReader:
        """The key columns of every row of `table` (the key-only scan that finds deleted rows)."""
        columns = ", ".join(self.reader._quote(column) for column in key_columns)
        self.cursor.execute(f"SELECT {columns} FROM {self.reader.qualified(table)}")
        return self.cursor.fetch_record_batch()
