"""The request table as a door: `export_request_sensor` launches one run per PENDING row, and the
status sensors bring every row to its final status however its run ends.

The request sensor's cursor keeps a high-water mark of `created_at` and the run keys requested
within a look-back window behind it, so a tick neither rescans the table nor misses a row that
committed late or shares a timestamp; Dagster's run-key dedupe is the last guard against a
second run for the same attempt.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from export_pipelines.cache.export_sources import ExportSources
from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.engine.request import InvalidRequest
from export_pipelines.engine.steps import validate
from export_pipelines.engine.warehouse import WarehouseResource, is_cached, open_hardened
from export_pipelines.orchestration.jobs import export_job
from export_pipelines.orchestration.launch import REQUEST_SENSOR, attempt_tags, run_request_for
from export_pipelines.orchestration.request_check import parse_request
from export_pipelines.orchestration.run_outcome import settle_export, settle_lost_run
from export_pipelines.store.exports import ExportStore, ExportStoreResource, run_key
from export_pipelines.store.tables import ExportStatus

BATCH_SIZE = 50
STRAGGLERS_PER_TICK = 10
LOOK_BACK = timedelta(minutes=10)
WAREHOUSE_CHECK_TIMEOUT_SECONDS = 5.0
LOST_RUNS_PER_TICK = 50
LOST_RUN_GRACE = timedelta(minutes=1)  # the failure sensor's own turn comes first


def _load_cursor(raw: str | None) -> tuple[datetime | None, dict[str, str]]:
    if not raw:
        return None, {}
    cursor = json.loads(raw)
    high_water = datetime.fromisoformat(cursor["high_water"]) if cursor.get("high_water") else None
    return high_water, cursor.get("requested", {})


def _dump_cursor(high_water: datetime | None, requested: dict[str, str]) -> str:
    return json.dumps({"high_water": high_water.isoformat() if high_water else None, "requested": requested})


class _SourceChecks:
    """The checks of one tick: a warehouse connection opened on first need, cached copies through
    their catalog copies; when a source cannot be opened the checks are left to the run (which
    fails with a clear message)."""

    def __init__(self, warehouse: WarehouseResource, cache: CachedTablesResource, log):
        self.warehouse, self.cache, self.log = warehouse, cache, log
        self.connection = None
        self.unavailable = False

    def validate(self, request, export_id: str) -> None:
        if is_cached(request.source):
            try:
                with ExportSources(self.warehouse, self.cache).for_checks(request) as source:
                    validate(request, export_id, source.connection, source.catalog_name)
            except OSError as error:
                self.log.warning(f"checks of export {export_id} left to its run: {error}")
            return
        if self.connection is None and not self.unavailable:
            try:
                self.connection = open_hardened(self.warehouse.resolved_path, WAREHOUSE_CHECK_TIMEOUT_SECONDS)
            except (OSError, TimeoutError) as error:
                self.unavailable = True
                self.log.warning(f"warehouse checks left to the runs: {error}")
        if self.connection is not None:
            validate(request, export_id, self.connection)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def _run_request(record: dict[str, Any], checks: _SourceChecks, store: ExportStore, log) -> list[dg.RunRequest]:
    """The row's run request, or none after marking the row FAILED with why."""
    try:
        run_config, request = parse_request(record["request"])
        if request.export_id not in (None, record["id"]):
            raise InvalidRequest(f"request export_id {request.export_id!r} differs from the row id {record['id']!r}")
        if run_config.get("project_id", record["project_id"]) != record["project_id"]:
            raise InvalidRequest(
                f"request project_id {request.project_id!r} differs from the row's {record['project_id']!r}"
            )
        run_config["project_id"] = record["project_id"]
        checks.validate(request.model_copy(update={"project_id": record["project_id"]}), record["id"])
    except InvalidRequest as error:
        store.finish_unfinished(record["id"], ExportStatus.FAILED, str(error))
        log.info(f"export {record['id']} FAILED before launch: {error}")
        return []
    return [run_request_for(record, run_config)]


@dg.sensor(
    name=REQUEST_SENSOR,
    job=export_job,
    minimum_interval_seconds=2,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches one export_job run for each PENDING row of export_requests.",
)
def export_request_sensor(
    context: dg.SensorEvaluationContext,
    export_store: ExportStoreResource,
    warehouse: WarehouseResource,
    cache: CachedTablesResource,
) -> dg.SensorResult:
    store = export_store.get_store()
    high_water, requested = _load_cursor(context.cursor)
    since = high_water - LOOK_BACK if high_water else None
    run_requests = []
    checks = _SourceChecks(warehouse, cache, context.log)
    try:
        for record in store.pending(since, BATCH_SIZE + len(requested)):
            key = run_key(record)
            if key in requested:
                continue
            if not store.take_launch(record):
                # A door is launching it right now (or it has moved on). Looked at again next tick
                # (it stays in the look-back window).
                continue
            created_at = record["created_at"]
            high_water = max(high_water, created_at) if high_water else created_at
            requested[key] = created_at.isoformat()
            run_requests += _run_request(record, checks, store, context.log)
            if len(run_requests) >= BATCH_SIZE:
                break
        if since is not None:
            # Stragglers: rows older than the look-back (a very late commit, an explicit old
            # created_at) that no run was ever launched for.
            for record in store.pending(None, STRAGGLERS_PER_TICK, created_before=since):
                if context.instance.get_runs(dg.RunsFilter(tags=attempt_tags(record)), limit=1):
                    continue
                if not store.take_launch(record):
                    continue
                context.log.warning(f"straggler export {record['id']}: no run was ever launched for it")
                run_requests += _run_request(record, checks, store, context.log)
    finally:
        checks.close()
    if high_water is not None:
        horizon = high_water - LOOK_BACK
        requested = {k: v for k, v in requested.items() if datetime.fromisoformat(v) >= horizon}
    return dg.SensorResult(run_requests=run_requests, cursor=_dump_cursor(high_water, requested))


def _finish_export_of_run(
    context: dg.RunStatusSensorContext, store: ExportStore, status: ExportStatus, message: str
) -> None:
    """Give the export of an ended run its final status, unless it has one already or has moved on to
    a later attempt."""
    run = context.dagster_run
    record = store.find_by_run(run.run_id)
    export_id = record["id"] if record else run.tags.get("export_id") or run.run_config.get("export_id") or run.run_id
    current = record or store.get(export_id)
    if current is not None and run.tags.get("export_attempt") not in (None, str(current["attempt"])):
        return
    if store.finish_unfinished(export_id, status, message):
        context.log.info(f"export {export_id} {status.value}: {message}")


@dg.run_failure_sensor(
    monitored_jobs=[export_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Marks the export of a failed run FAILED; an export whose run was lost before it began "
    "is queued again as a new attempt (at most 3 times).",
)
def export_failure_sensor(context: dg.RunFailureSensorContext, export_store: ExportStoreResource) -> None:
    message = context.failure_event.message or "the run failed"
    store = export_store.get_store()
    lost = settle_lost_run(store, context.dagster_run, message)
    if lost is not None:
        context.log.warning(lost)
        return
    _finish_export_of_run(context, store, ExportStatus.FAILED, message)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    monitored_jobs=[export_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Marks the export of a cancelled run CANCELLED.",
)
def export_cancel_sensor(context: dg.RunStatusSensorContext, export_store: ExportStoreResource) -> None:
    _finish_export_of_run(context, export_store.get_store(), ExportStatus.CANCELLED, "cancelled")


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Brings every RUNNING export whose run has ended (or vanished) to its final status, and "
    "queues again PENDING exports whose run failed before they began; run status sensors deliver at most "
    "once and can fall behind.",
)
def export_reconciliation_sensor(
    context: dg.SensorEvaluationContext, export_store: ExportStoreResource
) -> dg.SkipReason:
    store = export_store.get_store()
    fixed = sum(settle_export(store, context.instance, record) for record in store.running(limit=200))
    waiting = datetime.now(UTC) - LOST_RUN_GRACE
    for record in store.pending(None, LOST_RUNS_PER_TICK, created_before=waiting):
        runs = context.instance.get_runs(dg.RunsFilter(tags=attempt_tags(record)), limit=1)
        if runs and runs[0].status == dg.DagsterRunStatus.FAILURE:
            lost = settle_lost_run(store, runs[0], f"run {runs[0].run_id} failed")
            if lost is not None:
                context.log.warning(lost)
                fixed += 1
    return dg.SkipReason(f"reconciled {fixed} export(s)")
