"""Cached tables in Dagster (SPEC, "Cache"): the asset `cached_tables`, one dynamic partition per cache
entry, materialized by each refresh with its figures; `cache_refresh_job`; the sensor that launches
every due refresh exactly once (run key = entry, reason and due time); and the sensor that records a
refresh whose run died outside its step."""

import json
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from export_pipelines.cache.catalogs import CatalogsFileError
from export_pipelines.cache.due import due_refreshes
from export_pipelines.cache.refresh import RefreshFailed, refresh, remove_retired_versions
from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.cache.sources import CatalogUnavailable, UnknownCatalogTable
from export_pipelines.cache.versions import SchemaChanged
from export_pipelines.store.tables import CacheStatus

CACHE_ENTRY_TAG = "cache_entry"
cache_entries_partitions = dg.DynamicPartitionsDefinition(name="cache_entries")


class RefreshConfig(dg.Config):
    """What a refresh run does."""

    full: bool = Field(
        default=False,
        description="Replace the copy with every row of the source. Otherwise incremental: the rows changed since "
        "the last watermark are upserted by key and deleted rows removed (a full refresh when the table has no "
        "copy yet, no cursor column or no key).",
    )
    reason: str = Field(default="asked", description="Why the refresh runs: first, full, incremental or asked.")
    due_at: str | None = Field(default=None, description="The time this refresh fell due (ISO-8601).")


@dg.asset(
    partitions_def=cache_entries_partitions,
    group_name="cache",
    kinds={"duckdb"},
    description="Cached copies of catalog tables, one partition per cache entry. Each materialization is a "
    "refresh: a new immutable version of the copy, with rows inserted / updated / deleted and the watermark.",
)
def cached_tables(
    context: dg.AssetExecutionContext, config: RefreshConfig, cache: CachedTablesResource
) -> dg.MaterializeResult:
    entry_id = context.partition_key
    store = cache.store()
    entry = store.get(entry_id)
    if entry is None:
        raise dg.Failure(description=f"cache entry {entry_id} no longer exists", allow_retries=False)
    table = f"{entry['schema_name']}.{entry['table_name']}"
    store.start_refresh(entry_id, context.run.run_id)
    try:
        outcome = refresh(cache, entry, config.full, context.run.run_id)
    except (
        RefreshFailed,
        CatalogUnavailable,
        UnknownCatalogTable,
        CatalogsFileError,
        SchemaChanged,
        ValueError,
    ) as error:
        store.fail_refresh(entry_id, context.run.run_id, str(error))
        raise dg.Failure(description=f"refresh of {table} failed: {error}", allow_retries=False) from None
    except BaseException as error:
        store.fail_refresh(entry_id, context.run.run_id, f"{type(error).__name__}: {error}")
        raise
    figures = outcome.figures
    context.log.info(
        f"{outcome.kind} refresh of {table} (catalog {entry['catalog_id']}): {figures.rows:,} rows; "
        f"{figures.inserted:,} inserted, {figures.updated:,} updated, {figures.deleted:,} deleted"
    )
    removed = remove_retired_versions(cache)
    return dg.MaterializeResult(
        metadata={
            "kind": outcome.kind,
            "why": outcome.reason,
            "launched_for": config.reason if config.due_at is None else f"{config.reason}, due {config.due_at}",
            "catalog": entry["catalog_id"],
            "table": table,
            "project_id": entry["project_id"],
            "dagster/row_count": figures.rows,
            "rows_inserted": figures.inserted,
            "rows_updated": figures.updated,
            "rows_deleted": figures.deleted,
            "watermark": figures.watermark or "none",
            "duration_ms": outcome.duration_ms,
            "version": outcome.version,
            "refreshed_at": outcome.refreshed_at.isoformat(),
            "old_versions_removed": removed,
        }
    )


cache_refresh_job = dg.define_asset_job(
    "cache_refresh_job",
    selection=[cached_tables],
    executor_def=dg.in_process_executor,
    description="Refreshes one cached table (a partition of cached_tables).",
)


def _tags(entry_id: str, project_id: str, reason: str) -> dict[str, str]:
    # Not `project_id`: that tag holds a project's exports to their concurrency limit.
    return {CACHE_ENTRY_TAG: entry_id, "cache_project": project_id, "cache_refresh": reason}


@dg.sensor(
    job=cache_refresh_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches each due refresh of every cache entry exactly once: the first full refresh of a new "
    "entry at once, each point of its schedules, and refreshes asked for through the API.",
)
def cache_refresh_sensor(context: dg.SensorEvaluationContext, cache: CachedTablesResource) -> dg.SensorResult:
    entries = cache.store().list_entries()
    now = datetime.now(UTC)
    handled: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(cache_entries_partitions.name))
    ids = {entry["id"] for entry in entries}
    run_requests = []
    for entry in entries:
        seen = handled.setdefault(entry["id"], {})
        for due in due_refreshes(entry, now):
            if seen.get(due.reason) == due.due_at.isoformat():
                continue
            seen[due.reason] = due.due_at.isoformat()
            if due.launch:
                run_requests.append(
                    dg.RunRequest(
                        run_key=due.run_key,
                        partition_key=entry["id"],
                        run_config={
                            "ops": {
                                "cached_tables": {
                                    "config": {"full": due.full, "reason": due.reason, "due_at": due.due_at.isoformat()}
                                }
                            }
                        },
                        tags=_tags(entry["id"], entry["project_id"], due.reason),
                    )
                )
    requests = []
    if ids - known:
        requests.append(cache_entries_partitions.build_add_request(sorted(ids - known)))
    if known - ids:
        requests.append(cache_entries_partitions.build_delete_request(sorted(known - ids)))
    cursor = {entry_id: seen for entry_id, seen in handled.items() if entry_id in ids}
    return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=requests, cursor=json.dumps(cursor))


@dg.run_failure_sensor(
    monitored_jobs=[cache_refresh_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Records the failure of a refresh whose run died outside its step (the copy stays as it was).",
)
def cache_refresh_failure_sensor(context: dg.RunFailureSensorContext, cache: CachedTablesResource) -> None:
    entry_id = context.dagster_run.tags.get(CACHE_ENTRY_TAG)
    if entry_id is None:
        return
    message = context.failure_event.message or "the refresh run failed"
    entry = cache.store().get(entry_id)
    unfinished = (CacheStatus.PENDING, CacheStatus.REFRESHING)
    if entry is not None and entry["status"] in unfinished and entry["run_id"] in (None, context.dagster_run.run_id):
        cache.store().fail_refresh(entry_id, context.dagster_run.run_id, message)
