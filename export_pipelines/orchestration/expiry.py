"""Expiry: artifacts live for EXPORTS_RETENTION, then go; exports are never regenerated.

`expire_exports_job` (hourly through `expire_exports_schedule`): SUCCEEDED exports older than
the retention lose every artifact and become EXPIRED; SUCCEEDED exports whose manifest vanished
some other way (a bucket lifecycle rule) become EXPIRED; objects left behind by FAILED or
CANCELLED exports are removed. Each pass is idempotent and bounded.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from export_pipelines.engine.artifacts import ExportS3Resource, delete_export_objects, export_key_prefix, get_manifest
from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.orchestration.resources import default_resources
from export_pipelines.store.exports import ExportStore, ExportStoreResource
from export_pipelines.store.tables import ExportStatus, export_requests


class ExpiryConfig(dg.Config):
    max_exports: int = Field(default=500, description="Most exports each kind of pass looks at in one run.")


def _exports(store: ExportStore, condition: Any, order: Any, limit: int) -> list[dict[str, Any]]:
    query = sa.select(export_requests.c.id, export_requests.c.project_id).where(condition).order_by(order).limit(limit)
    with store.engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings()]


def expire(store: ExportStore, s3: ExportS3Resource, retention_cutoff: datetime, limit: int) -> dict[str, int]:
    """One expiry pass; returns its counts."""
    client, bucket = s3.get_client(), s3.resolved_bucket
    counts = {"expired": 0, "vanished": 0, "cleaned": 0, "objects_deleted": 0}

    def delete_objects(record: dict[str, Any]) -> int:
        deleted = delete_export_objects(client, bucket, s3.resolved_prefix, record["project_id"], record["id"])
        counts["objects_deleted"] += deleted
        return deleted

    succeeded = export_requests.c.status == ExportStatus.SUCCEEDED.value
    for record in _exports(
        store, succeeded & (export_requests.c.finished_at < retention_cutoff), export_requests.c.finished_at, limit
    ):
        delete_objects(record)
        if store.finish_unfinished_if(record["id"], ExportStatus.SUCCEEDED, ExportStatus.EXPIRED, None):
            counts["expired"] += 1
    # Lifecycle rules remove the oldest objects first: look at the oldest exports first.
    for record in _exports(store, succeeded, export_requests.c.finished_at, limit):
        key_prefix = export_key_prefix(s3.resolved_prefix, record["project_id"], record["id"])
        if get_manifest(client, bucket, key_prefix) is None:
            delete_objects(record)
            reason = "artifacts removed outside the service"
            if store.finish_unfinished_if(record["id"], ExportStatus.SUCCEEDED, ExportStatus.EXPIRED, reason):
                counts["vanished"] += 1
    failed = export_requests.c.status.in_([ExportStatus.FAILED.value, ExportStatus.CANCELLED.value])
    recent = export_requests.c.finished_at >= retention_cutoff
    for record in _exports(store, failed & recent, export_requests.c.finished_at.desc(), limit):
        if delete_objects(record):
            counts["cleaned"] += 1
    return counts


@dg.op(description="Expire old artifacts, mark vanished ones, remove leftovers of failed exports.")
def expire_artifacts(
    context: dg.OpExecutionContext,
    config: ExpiryConfig,
    export_store: ExportStoreResource,
    s3: ExportS3Resource,
    policy: ExportPolicy,
) -> None:
    cutoff = datetime.now(UTC) - policy.resolved_retention
    counts = expire(export_store.get_store(), s3, cutoff, config.max_exports)
    context.log.info(f"expiry pass (artifacts older than {cutoff.isoformat()}): {counts}")
    context.add_output_metadata({**counts, "retention_cutoff": cutoff.isoformat()})


@dg.job(
    executor_def=dg.in_process_executor,
    resource_defs=default_resources(),
    description="Removes expired artifacts and brings export_requests in line with what S3 holds.",
)
def expire_exports_job() -> None:
    expire_artifacts()


expire_exports_schedule = dg.ScheduleDefinition(
    name="expire_exports_schedule",
    job=expire_exports_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly expiry of export artifacts (EXPORTS_RETENTION).",
)
