"""The cache as a Python API (SPEC, "Cache"): batch create (each item checked on its own: one bad
item never fails the others), list, get, ask for a refresh, delete. What the REST API and the CLI
call; refreshes themselves run as Dagster runs launched by the refresh sensor."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from export_pipelines.cache.catalogs import CatalogsFileError
from export_pipelines.cache.due import next_refresh_at
from export_pipelines.cache.refresh import incremental_blocker, plan_table
from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.cache.schedules import InvalidSchedule, Schedule
from export_pipelines.cache.sources import CatalogUnavailable, UnknownCatalogTable
from export_pipelines.engine.warehouse import WAREHOUSE_CATALOG


class CacheEntryNotFound(LookupError):
    """No cache entry with that id in that project (HTTP 404)."""


class CacheItem(BaseModel):
    """One item of a batch create, as the API and the CLI's file give it (camelCase)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")

    catalog_id: str = Field(min_length=1, max_length=128)
    schema_name: str = Field(min_length=1, max_length=256)
    table_name: str = Field(min_length=1, max_length=256)
    incremental_cache_schedule: dict[str, Any] | None = None
    full_refresh_cache_schedule: dict[str, Any] | None = None


@dataclass(frozen=True)
class BatchResult:
    """One item's answer: the entry created or updated, or why the item failed."""

    success: bool
    error: str | None
    cache: dict[str, Any] | None


def _item_problem(error: ValidationError) -> str:
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"])
        message = "unknown field" if problem["type"] == "extra_forbid" else problem["msg"]
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


@dataclass
class CacheService:
    cache: CachedTablesResource = field(default_factory=CachedTablesResource)

    def batch(self, project_id: str, items: list[Any]) -> list[BatchResult]:
        """Create (or reschedule) a cache entry per item, in order; each item succeeds or fails alone."""
        try:
            catalogs = self.cache.catalogs()
        except CatalogsFileError as error:
            return [BatchResult(False, str(error), None) for _ in items]
        return [self._one(project_id, raw, catalogs) for raw in items]

    def _one(self, project_id: str, raw: Any, catalogs: Mapping[str, Any]) -> BatchResult:
        if not isinstance(raw, Mapping):
            return BatchResult(False, "an item must be an object {catalogId, schemaName, tableName, ...}", None)
        try:
            item = CacheItem.model_validate(raw)
        except ValidationError as error:
            return BatchResult(False, _item_problem(error), None)
        catalog = catalogs.get(item.catalog_id)
        if catalog is None:
            known = ", ".join(catalogs) or "none are declared (EXPORTS_CATALOGS)"
            hint = " (the warehouse is exported directly, never cached)" if item.catalog_id == WAREHOUSE_CATALOG else ""
            return BatchResult(False, f"unknown catalog {item.catalog_id!r}{hint}; catalogs: {known}", None)
        try:
            incremental = (
                Schedule.parse(item.incremental_cache_schedule, "incrementalCacheSchedule")
                if item.incremental_cache_schedule is not None
                else None
            )
            full = (
                Schedule.parse(item.full_refresh_cache_schedule, "fullRefreshCacheSchedule")
                if item.full_refresh_cache_schedule is not None
                else None
            )
            plan = plan_table(catalog, item.schema_name, item.table_name)
        except (InvalidSchedule, UnknownCatalogTable, CatalogUnavailable, ValueError) as error:
            return BatchResult(False, str(error), None)
        if incremental is not None:
            blocker = incremental_blocker(plan, catalog)
            if blocker is not None:
                return BatchResult(False, blocker, None)
        record, _created = self.cache.store().put(
            project_id,
            item.catalog_id,
            item.schema_name,
            item.table_name,
            incremental.as_json() if incremental else None,
            full.as_json() if full else None,
        )
        return BatchResult(True, None, record)

    def entries(self, project_id: str) -> list[dict[str, Any]]:
        return self.cache.store().list_entries(project_id)

    def get(self, project_id: str, entry_id: str) -> dict[str, Any]:
        record = self.cache.store().get(entry_id)
        if record is None or record["project_id"] != project_id:
            raise CacheEntryNotFound(f"no cache entry {entry_id}")
        return record

    def refresh(self, project_id: str, entry_id: str, full: bool) -> dict[str, Any]:
        """Ask for a refresh now: the refresh sensor launches it within seconds."""
        self.get(project_id, entry_id)
        self.cache.store().request_refresh(entry_id, full)
        return self.get(project_id, entry_id)

    def delete(self, project_id: str, entry_id: str) -> None:
        """Remove the entry; its copy's files go once no export can still be reading them."""
        self.get(project_id, entry_id)
        self.cache.store().delete(entry_id)

    @staticmethod
    def next_refresh_at(record: Mapping[str, Any]) -> datetime | None:
        return next_refresh_at(dict(record), datetime.now(UTC))
