"""The cached tables as a Dagster resource: the declared catalogs, the folder of version files, the
entries' database; and the current copy an export of `{catalog, table}` reads (SPEC, "Cache")."""

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from pydantic import Field, PrivateAttr

from export_pipelines.cache.catalogs import Catalog, load_catalogs
from export_pipelines.engine.request import SourceNotReady, UnknownSource
from export_pipelines.engine.warehouse import CatalogCopy, RunConnection, WarehouseUnavailable, open_hardened
from export_pipelines.settings import env
from export_pipelines.store.cache_entries import CacheStore
from export_pipelines.store.database import engine_for

OPEN_TIMEOUT_SECONDS = 30.0
CHECK_COPIES_KEPT = 16  # catalog copies of versions kept for checking requests (versions never change)


@dataclass(frozen=True)
class CachedCopy:
    """The version of a cached table that an export reads."""

    path: Path
    catalog_name: str
    entry: dict[str, Any]


class CachedTablesResource(dg.ConfigurableResource):
    """Cached copies of catalog tables: where their versions live and which one is current."""

    catalogs_file: str | None = Field(
        default=None, description="YAML file declaring the catalogs. Default: $EXPORTS_CATALOGS (none when unset)."
    )
    cache_dir: str | None = Field(
        default=None,
        description="Folder of the cached copies' version files. Default: $EXPORTS_CACHE_DIR, else .data/cache.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the database of the cache entries (the request table's). "
        "Default: $EXPORTS_DATABASE_URL, else sqlite:///.data/exports.db.",
    )
    _run: RunConnection = PrivateAttr(default_factory=RunConnection)
    _checks: "OrderedDict[Path, CatalogCopy]" = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def root(self) -> Path:
        return Path(self.cache_dir or env("EXPORTS_CACHE_DIR")).absolute()

    def catalogs(self) -> dict[str, Catalog]:
        return load_catalogs(self.catalogs_file)

    def store(self) -> CacheStore:
        return CacheStore(engine_for(self.database_url or env("EXPORTS_DATABASE_URL")))

    def version_path(self, relative: str) -> Path:
        """A version's file below the cache folder (paths in the database are relative to it)."""
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"cache version {relative!r} lies outside the cache folder")
        return path

    def copy_of(self, project_id: str, catalog_id: str, table: str) -> CachedCopy:
        """The current copy of `table` ("schema.table") of the catalog in the project; UnknownSource
        when there is no such catalog or cache entry, SourceNotReady before its first copy."""
        catalogs = self.catalogs()
        catalog = catalogs.get(catalog_id)
        if catalog is None:
            known = ", ".join(["warehouse", *catalogs]) if catalogs else "warehouse (no catalogs are declared)"
            raise UnknownSource(f"unknown catalog {catalog_id!r}; available: {known}")
        schema, dot, name = table.partition(".")
        if not dot or not schema or not name:
            raise UnknownSource(f'source table must be "schema.table", got {table!r}')
        entry = self.store().find(project_id, catalog_id, schema, name)
        if entry is None:
            raise UnknownSource(
                f"table {table} of catalog {catalog_id} is not cached in project {project_id}: "
                "create a cache entry for it first (POST …/cache/batch)"
            )
        if entry["version_path"] is None:
            reason = f": {entry['error']}" if entry["error"] else ""
            raise SourceNotReady(
                f"the cached copy of {table} (catalog {catalog_id}) is not ready yet: its first refresh has not "
                f"finished (status {entry['status']}{reason})"
            )
        return CachedCopy(self.version_path(entry["version_path"]), catalog.name, entry)

    @contextmanager
    def catalog_connection(self, copy: CachedCopy) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection on an in-memory copy of the version's catalog, for checking requests."""
        with self._lock:
            checks = self._checks.pop(copy.path, None) or CatalogCopy(copy.path, OPEN_TIMEOUT_SECONDS)
            self._checks[copy.path] = checks
            while len(self._checks) > CHECK_COPIES_KEPT:
                self._checks.popitem(last=False)
        cursor = checks.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def connect(self, copy: CachedCopy) -> Iterator[duckdb.DuckDBPyConnection]:
        """A hardened read-only connection on the version, closed on exit."""
        try:
            connection = open_hardened(copy.path, OPEN_TIMEOUT_SECONDS)
        except OSError as error:
            raise WarehouseUnavailable(str(error)) from error
        try:
            yield connection
        finally:
            connection.close()

    def run_connection(self, copy: CachedCopy, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
        """The run's connection on the version (see RunConnection)."""
        return self._run.get(copy.path, OPEN_TIMEOUT_SECONDS, memory_limit)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._run.close()
