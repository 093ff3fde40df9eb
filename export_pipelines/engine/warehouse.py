"""The DuckDB warehouse exports read: a hardened read-only connection and its catalog.

The connection cannot read files outside the warehouse, load extensions or change its own
settings, so no request can reach beyond the warehouse. Identifiers from a request are looked
up in the catalog with bound parameters before they are quoted into a statement.
"""

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field, PrivateAttr

from export_pipelines.engine.request import InvalidRequest, SourceConfig, UnknownSource
from export_pipelines.settings import env

SAVED_QUERY_SCHEMA = "queries"
WAREHOUSE_CATALOG = "warehouse"  # the catalog id that names the warehouse itself (other ids: cached catalogs)
CATALOG_NEEDS_A_TABLE = 'source "catalog" goes with a "table": {"catalog": "<catalog id>", "table": "schema.table"}'

HARDENED_CONFIG = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def quote_identifier(name: str) -> str:
    """A DuckDB identifier in double quotes; only ever called on names found in the catalog."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class WarehouseSource:
    """A table or saved query found in the catalog."""

    catalog: str
    schema: str
    name: str
    is_saved_query: bool

    @property
    def sql_name(self) -> str:
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.name)}"

    @property
    def display_name(self) -> str:
        """Quoted, fully-qualified name for display, e.g. warehouse.payment."charges"."""
        return f'{self.catalog}.{self.schema}."{self.name}"'


class RunConnection:
    """A run's hardened read-only connection, opened on first use and kept until the run ends, so
    the ops of one run read one consistent snapshot. Asked for with another memory limit (an
    export that needs more than the limit), it is opened again with that one. What DuckDB spills
    under the limit (a sort) goes to a folder of its own in the system's temporary folder, removed
    on close, never beside the warehouse (whose folder may be read-only or shared)."""

    def __init__(self) -> None:
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._opened_as: tuple[Path, str | None] | None = None
        self._spills: Path | None = None

    def get(self, path: Path, timeout_seconds: float, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
        if self._connection is None or self._opened_as != (path, memory_limit):
            self.close()
            self._spills = Path(tempfile.mkdtemp(prefix="export-pipelines-duckdb-"))
            self._connection = open_hardened(path, timeout_seconds, memory_limit, self._spills)
            self._opened_as = (path, memory_limit)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = self._opened_as = None
        if self._spills is not None:
            shutil.rmtree(self._spills, ignore_errors=True)
            self._spills = None


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse, opened read-only and hardened for every run."""

    path: str | None = Field(
        default=None,
        description="Path of the DuckDB warehouse file. Default: $EXPORTS_WAREHOUSE, else .data/warehouse.duckdb.",
    )
    open_timeout_seconds: float = Field(
        default=30.0,
        description="How long to keep retrying while another process holds the warehouse file for writing.",
    )
    _run: RunConnection = PrivateAttr(default_factory=RunConnection)
    _catalog: "CatalogCopy | None" = PrivateAttr(default=None)

    @property
    def resolved_path(self) -> Path:
        return Path(self.path or env("EXPORTS_WAREHOUSE"))

    @contextmanager
    def catalog_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection on an in-memory copy of the warehouse's catalog (every table and saved
        query, with its columns and types, and no rows), for checking requests without opening
        the file: what a door checks on every create. Never for reading rows."""
        if self._catalog is None:
            self._catalog = CatalogCopy(self.resolved_path, self.open_timeout_seconds)
        cursor = self._catalog.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def connect(self, memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A hardened read-only connection like a run's (under DuckDB's `memory_limit` if given),
        closed on exit."""
        opened = RunConnection()
        try:
            try:
                connection = opened.get(self.resolved_path, self.open_timeout_seconds, memory_limit)
            except OSError as error:  # missing, or locked for too long (TimeoutError)
                raise WarehouseUnavailable(str(error)) from error
            yield connection
        finally:
            opened.close()

    def run_connection(self, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
        """The run's connection (see RunConnection)."""
        return self._run.get(self.resolved_path, self.open_timeout_seconds, memory_limit)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._run.close()


def _require_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"warehouse file {path} does not exist (set EXPORTS_WAREHOUSE)")


def open_hardened(
    path: Path, timeout_seconds: float, memory_limit: str | None = None, spills: Path | None = None
) -> duckdb.DuckDBPyConnection:
    """Open `path` read-only with external access off, under `memory_limit` if given (DuckDB's
    default otherwise), spilling into `spills` if given; retry while a writer holds the file lock."""
    _require_file(path)
    config = dict(HARDENED_CONFIG)
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    if spills is not None:
        config["temp_directory"] = str(spills)
    deadline = time.monotonic() + timeout_seconds
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=True, config=config)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"warehouse {path} stayed locked by another process for {timeout_seconds:.0f}s; "
                    "try again when the writer has finished"
                ) from error
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class WarehouseUnavailable(OSError):
    """The warehouse file is missing or stayed locked by a writer: try again later (HTTP 503)."""


class CatalogCopy:
    """The warehouse's catalog copied into an in-memory database: each table and saved query as an
    empty table of the same name, columns and types, in a catalog of the warehouse's own name.
    Copied again when the warehouse file (or its WAL) changes; safe to use from many threads
    through `cursor()`."""

    def __init__(self, path: Path, timeout_seconds: float):
        self.path, self.timeout_seconds = path, timeout_seconds
        self._lock = threading.Lock()
        self._version: tuple | None = None
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._catalog = ""

    def _file_version(self) -> tuple:
        _require_file(self.path)
        wal = self.path.with_name(self.path.name + ".wal")
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in (f.stat() for f in (self.path, wal) if f.exists()))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            try:
                version = self._file_version()
                if version != self._version or self._connection is None:
                    copy = self._copy()
                    if self._connection is not None:
                        self._connection.close()
                    self._connection, self._version = copy, version
            except OSError as error:  # missing, or locked for too long (TimeoutError)
                raise WarehouseUnavailable(str(error)) from error
            cursor = self._connection.cursor()
        cursor.execute(f"USE {self._catalog}")  # a cursor starts on the default in-memory catalog
        return cursor

    def _copy(self) -> duckdb.DuckDBPyConnection:
        with open_hardened(self.path, self.timeout_seconds) as source:
            relations = _relations(source)
            copies = []
            for _, schema, name in relations:
                relation = source.sql(f"SELECT * FROM {quote_identifier(schema)}.{quote_identifier(name)} LIMIT 0")
                copies.append((schema, name, relation.columns, relation.types))
        catalog = self._catalog = quote_identifier(relations[0][0] if relations else self.path.stem)
        copy = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
        copy.execute(f"ATTACH ':memory:' AS {catalog}")
        copy.execute(f"USE {catalog}")
        for schema, name, names, types in copies:
            copy.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
            definition = ", ".join(f"{quote_identifier(c)} {t}" for c, t in zip(names, types, strict=True))
            copy.execute(f"CREATE TABLE {quote_identifier(schema)}.{quote_identifier(name)} ({definition})")
        copy.execute("SET enable_external_access = false")
        copy.execute("SET lock_configuration = true")
        return copy


def resolve_source(
    connection: duckdb.DuckDBPyConnection, source: SourceConfig, catalog_name: str | None = None
) -> WarehouseSource:
    """Find the requested table or saved query in the catalog, or fail naming what exists.
    `catalog_name`: how to show the catalog of a cached copy (default: the database's own name)."""
    check_source_fields(source)
    if source.table is not None:
        schema, dot, name = source.table.partition(".")
        if not dot or not schema or not name:
            raise InvalidRequest(f'source table must be "schema.table", got {source.table!r}')
        candidates = _relations(connection, exclude_schema=SAVED_QUERY_SCHEMA)
        kind = "table"
    else:
        schema, name = SAVED_QUERY_SCHEMA, source.query or ""
        candidates = _relations(connection, only_schema=SAVED_QUERY_SCHEMA)
        kind = "saved query"
    for catalog, found_schema, found_name in candidates:
        if (found_schema, found_name) == (schema, name):
            return WarehouseSource(catalog_name or catalog, found_schema, found_name, source.query is not None)
    available = ", ".join(n if kind == "saved query" else f"{s}.{n}" for _, s, n in candidates) or "none"
    raise UnknownSource(f"unknown {kind} {source.table or source.query!r}; available: {available}")


def check_source_fields(source: SourceConfig) -> None:
    """Exactly one of a table or a saved query; a catalog only with a table."""
    if (source.table is None) == (source.query is None):
        raise InvalidRequest('source must name exactly one of "table" or "query"')
    if source.catalog is not None and source.table is None:
        raise InvalidRequest(CATALOG_NEEDS_A_TABLE)


def is_cached(source: SourceConfig) -> bool:
    """Whether the source is a cached copy of a catalog's table rather than the warehouse."""
    return source.catalog not in (None, WAREHOUSE_CATALOG)


def list_sources(connection: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """The tables and saved queries a request can name."""
    return {
        "tables": [f"{s}.{n}" for _, s, n in _relations(connection, exclude_schema=SAVED_QUERY_SCHEMA)],
        "queries": [n for _, _, n in _relations(connection, only_schema=SAVED_QUERY_SCHEMA)],
    }


def _relations(
    connection: duckdb.DuckDBPyConnection,
    only_schema: str | None = None,
    exclude_schema: str | None = None,
) -> list[tuple[str, str, str]]:
    rows = connection.execute(
        """
        SELECT database_name, schema_name, table_name FROM duckdb_tables()
        WHERE NOT internal AND NOT temporary
        UNION ALL
        SELECT database_name, schema_name, view_name FROM duckdb_views()
        WHERE NOT internal AND NOT temporary AND schema_name NOT IN ('information_schema', 'pg_catalog')
        """
    ).fetchall()
    return sorted(
        (catalog, schema, name)
        for catalog, schema, name in rows
        if (only_schema is None or schema == only_schema) and (exclude_schema is None or schema != exclude_schema)
    )
