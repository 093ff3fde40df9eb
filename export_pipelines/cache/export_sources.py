"""Where an export reads: the warehouse, or the current copy of a cached table (`{catalog, table}`).
Every door and the run ask here, so the choice is made in one place, from the entry's pointer and
never from a path in the request."""

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import duckdb

from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.engine.request import ExportRequest
from export_pipelines.engine.warehouse import WarehouseResource, is_cached


@dataclass(frozen=True)
class SourceConnection:
    """A connection that holds the request's source, and how to show the source's catalog."""

    connection: duckdb.DuckDBPyConnection
    catalog_name: str | None = None


@dataclass
class ExportSources:
    warehouse: WarehouseResource
    cache: CachedTablesResource

    def for_checks(self, request: ExportRequest) -> AbstractContextManager[SourceConnection]:
        """A connection on a catalog copy (no rows): what doors check a request against."""
        return self._connection(request, rows=False)

    def for_reading(self, request: ExportRequest) -> AbstractContextManager[SourceConnection]:
        """A hardened read-only connection on the source's rows, closed on exit."""
        return self._connection(request, rows=True)

    @contextmanager
    def _connection(self, request: ExportRequest, rows: bool) -> Iterator[SourceConnection]:
        if not is_cached(request.source):
            with self.warehouse.connect() if rows else self.warehouse.catalog_connection() as connection:
                yield SourceConnection(connection)
            return
        copy = self.cache.copy_of(request.project_id, request.source.catalog or "", request.source.table or "")
        with self.cache.connect(copy) if rows else self.cache.catalog_connection(copy) as connection:
            yield SourceConnection(connection, copy.catalog_name)

    def for_run(self, request: ExportRequest, memory_limit: str | None) -> SourceConnection:
        """The run's connection, under DuckDB's `memory_limit`, kept by the resources until the run
        ends (one snapshot per run); asked for with another limit, it is opened again."""
        if not is_cached(request.source):
            return SourceConnection(self.warehouse.run_connection(memory_limit))
        copy = self.cache.copy_of(request.project_id, request.source.catalog or "", request.source.table or "")
        return SourceConnection(self.cache.run_connection(copy, memory_limit), copy.catalog_name)
