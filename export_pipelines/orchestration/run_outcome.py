"""Bringing a RUNNING export in line with how its Dagster run ended: what the reconciliation sensor
does for every such export, and what the service does while it waits on a cancelled run."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from export_pipelines.store.exports import ExportStore
from export_pipelines.store.tables import ExportStatus

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
