"""The cache routes under `/api/v1/data/projects/{projectId}` (SPEC, "Cache"): batch create, list, get,
refresh now, delete. Thin shells over `CacheService`; any key of the project may use them."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request

from export_pipelines.api.auth import project_caller
from export_pipelines.api.exports import BASE, ERRORS, ProjectId, require_json
from export_pipelines.api.schemas import CacheBatchResultView, CacheView, MessageView, ScheduleView
from export_pipelines.service.cache import CacheService
from export_pipelines.store.api_keys import ApiKey

MAX_BATCH_ITEMS = 200
DELETED = "Cache deleted successfully"

router = APIRouter(prefix=BASE, tags=["cache"])


def cache_service(request: Request) -> CacheService:
    return request.app.state.cache


Service = Annotated[CacheService, Depends(cache_service)]
Caller = Annotated[ApiKey, Depends(project_caller)]
EntryId = Annotated[str, Path(alias="id", description="The cache entry id.")]
BATCH_EXAMPLE = {
    "two tables": {
        "summary": "An incremental and a full schedule, and a table refreshed by cron",
        "value": [
            {
                "catalogId": "627249916703408649",
                "schemaName": "public",
                "tableName": "charges",
                "incrementalCacheSchedule": {"type": "BASIC", "expression": "PT6H"},
                "fullRefreshCacheSchedule": {"type": "CRON", "expression": "0 3 * * *"},
            },
            {"catalogId": "627249916703408649", "schemaName": "public", "tableName": "customers"},
        ],
    }
}


def cache_view(record: dict[str, Any]) -> CacheView:
    """An entry as the API shows it."""

    def schedule(raw: dict[str, str] | None) -> ScheduleView | None:
        return ScheduleView(**raw) if raw else None

    return CacheView(
        id=record["id"],
        app_id=record["project_id"],
        catalog_id=record["catalog_id"],
        schema_name=record["schema_name"],
        table_name=record["table_name"],
        incremental_cache_schedule=schedule(record["incremental_schedule"]),
        full_refresh_cache_schedule=schedule(record["full_refresh_schedule"]),
        status=record["status"],
        row_count=record["row_count"],
        last_refresh_at=record["last_refresh_at"],
        last_full_refresh_at=record["last_full_refresh_at"],
        next_refresh_at=CacheService.next_refresh_at(record),
        error=record["error"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )


@router.post(
    "/cache/batch",
    response_model=list[CacheBatchResultView],
    responses=ERRORS,
    summary="Create cache entries",
    dependencies=[Depends(require_json)],
)
def create_cache_batch(
    service: Service,
    key: Caller,
    project_id: ProjectId,
    items: Annotated[
        list[Any],
        Body(
            description="`{catalogId, schemaName, tableName, incrementalCacheSchedule?, fullRefreshCacheSchedule?}` "
            'per table; a schedule is `{"type": "BASIC", "expression": "PT6H"}` (days, hours, minutes, seconds; at '
            'least a minute) or `{"type": "CRON", "expression": "0 */6 * * *"}`.',
            openapi_examples=BATCH_EXAMPLE,
        ),
    ],
) -> list[CacheBatchResultView]:
    """Create a cache entry per item, or update the schedules of the project's entry for that table. Items are
    answered in order, each with `success`, `error` and `cache`: one bad item (unknown catalog, schema or table,
    a bad schedule, an incremental schedule on a table without cursor or key) fails alone. A new entry gets
    its first (full) refresh at once."""
    if len(items) > MAX_BATCH_ITEMS:
        raise HTTPException(400, f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}")
    return [
        CacheBatchResultView(
            success=result.success, error=result.error, cache=cache_view(result.cache) if result.cache else None
        )
        for result in service.batch(project_id, items)
    ]


@router.get("/cache", response_model=list[CacheView], responses=ERRORS, summary="List cache entries")
def list_cache(service: Service, key: Caller, project_id: ProjectId) -> list[CacheView]:
    """The project's cache entries, oldest first."""
    return [cache_view(record) for record in service.entries(project_id)]


@router.get("/cache/{id}", response_model=CacheView, responses=ERRORS, summary="Get a cache entry")
def get_cache(service: Service, key: Caller, project_id: ProjectId, entry_id: EntryId) -> CacheView:
    """One entry with its status, rows, last and next refresh, and the last error."""
    return cache_view(service.get(project_id, entry_id))


@router.post("/cache/{id}/refresh", status_code=202, response_model=CacheView, responses=ERRORS, summary="Refresh now")
def refresh_cache(
    service: Service,
    key: Caller,
    project_id: ProjectId,
    entry_id: EntryId,
    full: Annotated[
        bool, Query(description="A full refresh (default: incremental where the table allows it).")
    ] = False,
) -> CacheView:
    """Ask for a refresh now; it runs within seconds (follow `status` and `lastRefreshAt`)."""
    return cache_view(service.refresh(project_id, entry_id, full))


@router.delete("/cache/{id}", response_model=MessageView, responses=ERRORS, summary="Delete a cache entry")
def delete_cache(service: Service, key: Caller, project_id: ProjectId, entry_id: EntryId) -> MessageView:
    """Remove the entry and its copy (exports already reading it finish); then 404."""
    service.delete(project_id, entry_id)
    return MessageView(message=DELETED)
