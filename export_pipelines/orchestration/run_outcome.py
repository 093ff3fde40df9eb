"""Bringing an export in line with how its Dagster run ended: what the status sensors do for every
such export, and what the service does while it waits on a cancelled run. A run lost before its
export began (the export is still PENDING) is replaced by the system with a new attempt."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from export_pipelines.store.exports import ExportStore
from export_pipelines.store.tables import ExportStatus

MOST_LOST_RUNS = 3  # runs of one export lost before they began, each replaced; one more fails it
_ENDED = {
    dg.DagsterRunStatus.FAILURE: ExportStatus.FAILED,
    dg.DagsterRunStatus.CANCELED: ExportStatus.CANCELLED,
    dg.DagsterRunStatus.SUCCESS: ExportStatus.FAILED,  # a run that succeeded records its result itself
}


def settle_export(store: ExportStore, instance: dg.DagsterInstance, record: Mapping[str, Any]) -> bool:
    """Give a RUNNING export whose run has ended (or vanished) its final status; True if it moved."""
    run = instance.get_run_by_id(record["run_id"]) if record["run_id"] else None
    if run is not None and run.status not in _ENDED:
        return False
    status = _ENDED[run.status] if run is not None else ExportStatus.FAILED
    if run is None:
        error = f"run {record['run_id']} no longer exists"
    elif run.status == dg.DagsterRunStatus.SUCCESS:
        error = "the run ended without recording a result"
    else:
        error = f"run {run.run_id} ended {run.status.value}"
    return store.finish_unfinished_if(
        record["id"], ExportStatus.RUNNING, status, None if status is ExportStatus.CANCELLED else error
    )


def settle_lost_run(store: ExportStore, run: dg.DagsterRun, message: str) -> str | None:
    """If the failed `run` was lost before its export began (a killed daemon or worker host, a lost
    broker message, a run that timed out starting: the export is still PENDING at the run's attempt),
    queue the export again as a new attempt, or fail it once MOST_LOST_RUNS were replaced. Returns what
    was done, or None when the run's export had begun or moved on."""
    export_id, attempt = run.tags.get("export_id"), run.tags.get("export_attempt")
    if export_id is None or attempt is None:
        return None
    queued = store.relaunch_lost(export_id, int(attempt), MOST_LOST_RUNS)
    if queued is None:
        return None
    if queued:
        return f"export {export_id}: run {run.run_id} was lost before it began ({message}); queued again"
    error = f"{MOST_LOST_RUNS + 1} runs of the export were lost before they began; the last: {message}"
    store.finish_unfinished_if(export_id, ExportStatus.PENDING, ExportStatus.FAILED, error)
    return f"export {export_id} FAILED: {error}"
