"""The ops of `export_job`: the steps a user sees in the Dagster UI, with their logs and figures.

Each op runs one function of `steps`; lazy relations pass between them in memory, so the job
runs in one process with the in-memory IO manager.
"""

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import dagster as dg
import duckdb
import sqlalchemy as sa

from export_pipelines.cache.export_sources import ExportSources
from export_pipelines.cache.resource import CachedTablesResource
from export_pipelines.engine import steps
from export_pipelines.engine.artifacts import (
    ExportS3Resource,
    check_key_segment,
    delete_export_objects,
    presigned_links,
)
from export_pipelines.engine.policy import ExportPolicy
from export_pipelines.engine.request import ExportRequest, InvalidRequest
from export_pipelines.engine.steps import ExportRows, WrittenExport
from export_pipelines.engine.warehouse import WarehouseResource
from export_pipelines.orchestration.progress import ProgressReporter
from export_pipelines.orchestration.request_schema import require_source
from export_pipelines.store.database import database_problem
from export_pipelines.store.exports import ExportConflict, ExportStoreResource
from export_pipelines.store.tables import ExportStatus


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a bad request as one clear message in the UI, not as a stack trace."""
    try:
        yield
    except (InvalidRequest, ExportConflict) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


DATABASE_RETRIES = 6  # waits of 1, 2, 4, 8, 16 and 16 s: a restart of the request database is ridden out


@contextmanager
def through_database_outages(context: dg.OpExecutionContext) -> Iterator[None]:
    """Run the step again, after a growing wait, when the request database cannot be reached."""
    try:
        yield
    except sa.exc.OperationalError as error:
        wait = min(2**context.retry_number, 16)
        context.log.warning(f"the request database is unreachable ({database_problem(error)}); again in {wait} s")
        raise dg.RetryRequested(max_retries=DATABASE_RETRIES, seconds_to_wait=wait) from error


def client_source_of(run_tags: Mapping[str, str]) -> str:
    """The door a run came through: the Launchpad tags its runs dagster/from_ui, the request
    sensor tags client_source; any other run was launched through Dagster's API (GraphQL)."""
    if run_tags.get("dagster/from_ui") == "true":
        return "ui"
    return run_tags.get("client_source") or "graphql"


Stepped = TypeVar("Stepped")


def within_read_memory_limit(
    context: dg.OpExecutionContext,
    rows: ExportRows,
    step: Callable[[ExportRows], Stepped],
    sources: ExportSources,
    policy: ExportPolicy,
) -> tuple[Stepped, str]:
    """`step(rows)`, and whether the rows had to be read again. When DuckDB needs more than the
    run's memory limit (wide rows, large values), the rows are read again without a limit (what
    `step` wrote is already removed) and `step` runs on them."""
    limit = policy.read_memory_limit_for(rows.export.request)
    try:
        return step(rows), "no"
    except duckdb.OutOfMemoryException as error:
        if limit is None:
            raise
        reason = str(error).splitlines()[0]
        context.log.warning(f"Reading the rows needed more than DuckDB's memory limit of {limit} ({reason}); "
                            "reading them again without a limit")  # fmt: skip
        connection = sources.for_run(rows.export.request, memory_limit=None).connection
        again = steps.read_again(rows, connection, policy.resolved_max_rows)
        return step(again), f"yes, without a memory limit (needed more than {limit})"


CANCEL_CHECK_SECONDS = 1.0


def cancel_requested(context: dg.OpExecutionContext) -> Callable[[], bool]:
    """Whether the run was asked to stop (CANCELING), looked up at most once a second: a long
    write asks it every part, from the writer's threads."""
    checked_at, canceling = 0.0, False

    def ask() -> bool:
        nonlocal checked_at, canceling
        if not canceling and time.monotonic() - checked_at >= CANCEL_CHECK_SECONDS:
            checked_at = time.monotonic()
            run = context.instance.get_run_by_id(context.run_id)
            canceling = run is not None and run.status == dg.DagsterRunStatus.CANCELING
        return canceling

    return ask


@dg.op(description="Mark the export RUNNING and check the request against the catalog of its source.")
def resolve_request(
    context: dg.OpExecutionContext,
    config: ExportRequest,
    warehouse: WarehouseResource,
    cache: CachedTablesResource,
    export_store: ExportStoreResource,
    s3: ExportS3Resource,
    policy: ExportPolicy,
) -> ExportRows:
    with through_database_outages(context), user_errors():
        store = export_store.get_store()
        require_source(context.run.run_config)
        export_id = config.export_id or context.run_id
        check_key_segment("export_id", export_id)
        requested_by = config.requested_by.model_dump() if config.requested_by else {}
        if not requested_by.get("client_source"):
            requested_by["client_source"] = client_source_of(context.run.tags)
        store.start(export_id, config.project_id, steps.request_record(config), requested_by, context.run_id)
        memory_limit = policy.read_memory_limit_for(config)
        source = ExportSources(warehouse, cache).for_run(config, memory_limit)
        rows = steps.plan(config, export_id, source.connection, s3.resolved_prefix, source.catalog_name)
        export = rows.export
        store.describe(export_id, export.description)
    context.log.info(
        f"Export {export.export_id}: {export.source.display_name} as {export.format.value}/{export.compression.value}"
    )
    context.add_output_metadata(
        {
            "export_id": export.export_id,
            "project_id": export.project_id,
            "source": export.source.display_name,
            "format": export.format.value,
            "compression": export.compression.value,
            "source_columns": len(rows.relation.columns),
            "read_memory_limit": memory_limit or "none",
        }
    )
    return rows


@dg.op(description="Filter the rows, expand a list field into rows, and order them, as requested.")
def shape_rows(context: dg.OpExecutionContext, rows: ExportRows) -> ExportRows:
    request = rows.export.request
    with user_errors():
        shaped = steps.shape(rows)
    context.add_output_metadata(
        {
            "filters": dg.MetadataValue.json(request.filters) if request.filters is not None else "none",
            "expand_array": request.expand_array or "none",
            "order_by": ", ".join(request.order_by) if request.order_by else "none",
        }
    )
    return shaped


@dg.op(description="Select the requested columns (dot notation reaches nested struct fields).")
def select_columns(context: dg.OpExecutionContext, rows: ExportRows) -> ExportRows:
    with user_errors():
        selected = steps.select(rows)
    context.add_output_metadata({"columns": ", ".join(selected.relation.columns)})
    return selected


@dg.op(description="Leave out plumbing, vector and (on request) system columns; apply the row limit.")
def apply_row_rules(
    context: dg.OpExecutionContext,
    rows: ExportRows,
    policy: ExportPolicy,
    warehouse: WarehouseResource,
    cache: CachedTablesResource,
) -> ExportRows:
    with user_errors():
        shaped, read_again = within_read_memory_limit(
            context,
            rows,
            lambda rows: steps.apply_rules(rows, policy.resolved_max_rows, context.log.warning),
            ExportSources(warehouse, cache),
            policy,
        )
    assert shaped.rules is not None and shaped.row_count is not None
    context.log.info(f"{shaped.row_count:,} rows to export")
    context.add_output_metadata(
        {
            "rows": shaped.row_count,
            "limit": shaped.limit if shaped.limit is not None else "none",
            "columns": ", ".join(shaped.rules.kept),
            "left_out_system_columns": ", ".join(shaped.rules.dropped_system) or "none",
            "left_out_vector_columns": ", ".join(shaped.rules.dropped_vectors) or "none",
            "vectors_artifact": "yes" if shaped.vectors is not None else "no",
            "read_again": read_again,
        }
    )
    return shaped


@dg.op(description="Stream the rows through Polars into the format and compression, uploading each file to S3 "
       "(multipart) while it is written.")  # fmt: skip
def serialize(
    context: dg.OpExecutionContext,
    rows: ExportRows,
    s3: ExportS3Resource,
    export_store: ExportStoreResource,
    policy: ExportPolicy,
    warehouse: WarehouseResource,
    cache: CachedTablesResource,
) -> WrittenExport:
    def write(rows: ExportRows) -> WrittenExport:
        assert rows.row_count is not None
        progress = ProgressReporter(export_store.get_store(), rows.export.export_id, rows.row_count, context.log.info)
        return steps.serialize_to_s3(
            rows,
            s3.get_client(),
            s3.resolved_bucket,
            cancel_requested(context),
            on_rows=progress,
            parts_in_flight=s3.resolved_parts_in_flight,
        )

    with user_errors():
        written, read_again = within_read_memory_limit(context, rows, write, ExportSources(warehouse, cache), policy)
    for artifact in written.artifacts:
        context.log.info(
            f"Wrote s3://{s3.resolved_bucket}/{artifact.key}: {artifact.rows:,} rows, {artifact.bytes:,} bytes"
        )
    context.add_output_metadata({"files": len(written.artifacts), "bytes": written.bytes, "read_again": read_again})
    return written


@dg.op(description="Check every object in S3 (size and SHA-256 checksum) against the bytes written.")
def verify_upload(context: dg.OpExecutionContext, written: WrittenExport, s3: ExportS3Resource) -> WrittenExport:
    steps.verify(written, s3.get_client(), s3.resolved_bucket)
    context.log.info(f"{len(written.artifacts)} object(s) verified")
    return written


@dg.op(description="Write manifest.json last and mark the export SUCCEEDED with its figures and download links.")
def record_result(
    context: dg.OpExecutionContext,
    written: WrittenExport,
    s3: ExportS3Resource,
    export_store: ExportStoreResource,
    policy: ExportPolicy,
) -> None:
    bucket, client = s3.resolved_bucket, s3.get_client()
    manifest = steps.record(written, client, bucket)
    export = written.export
    with through_database_outages(context):
        export_store.get_store().succeed(
            export.export_id, manifest["rows"], manifest["bytes"], manifest["duration_ms"], manifest["files"]
        )
    ttl = policy.resolved_url_ttl_seconds
    links = presigned_links(client, bucket, manifest["files"], ttl)
    context.log.info(f"Export {export.export_id} SUCCEEDED: {manifest['rows']:,} rows, {manifest['bytes']:,} bytes")
    context.add_output_metadata(
        {
            "export_id": export.export_id,
            "rows": manifest["rows"],
            "bytes": manifest["bytes"],
            "duration_ms": manifest["duration_ms"],
            "files": dg.MetadataValue.md(_files_table(bucket, links, ttl)),
            **{f"download_{i}": dg.MetadataValue.url(link["url"]) for i, link in enumerate(links)},
            "manifest": dg.MetadataValue.url(f"s3://{bucket}/{export.key_prefix}manifest.json"),
            **{f"file_{i}": dg.MetadataValue.url(f"s3://{bucket}/{link['key']}") for i, link in enumerate(links)},
        }
    )
    # The figures as run tags too: the Runs list shows and filters them.
    context.instance.add_run_tags(
        context.run_id, {"export_rows": str(manifest["rows"]), "export_bytes": str(manifest["bytes"])}
    )


def _files_table(bucket: str, links: list[dict], ttl_seconds: int) -> str:
    """The artifacts as a Markdown table for the run page, each with its download link."""
    lines = ["| file | rows | bytes | sha256 | download |", "|---|---:|---:|---|---|"]
    for link in links:
        name = link["key"].rsplit("/", 1)[-1]
        lines.append(
            f"| `s3://{bucket}/{link['key']}` | {link['rows']:,} | {link['bytes']:,} | `{link['sha256'][:12]}…` "
            f"| [{name}]({link['url']}) |"
        )
    lines.append(f"\nLinks expire {ttl_seconds:,} s after the run; `export-pipelines download ID` makes new ones.")
    return "\n".join(lines)


@dg.failure_hook(required_resource_keys={"export_store", "s3"})
def record_export_failure(context: dg.HookContext) -> None:
    """A failed step fails the export: its row becomes FAILED (CANCELLED when the run was being
    cancelled), then its objects are removed (when S3 cannot be reached, by the next expiry pass)."""
    store = context.resources.export_store.get_store()
    record = store.find_by_run(context.run_id)
    if record is None or record["status"] != ExportStatus.RUNNING:
        return
    run = context.instance.get_run_by_id(context.run_id)
    cancelled = run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
    error = context.op_exception
    if isinstance(error, dg.Failure) and error.description:
        message = error.description
    elif error is not None:
        message = f"{type(error).__name__}: {error}"
    else:
        message = f"step {context.op.name} failed"
    if cancelled:
        if store.finish_unfinished_if(record["id"], ExportStatus.RUNNING, ExportStatus.CANCELLED, "cancelled"):
            context.log.info(f"Export {record['id']} CANCELLED")
    elif store.finish_unfinished_if(record["id"], ExportStatus.RUNNING, ExportStatus.FAILED, message):
        context.log.error(f"Export {record['id']} FAILED: {message}")
    s3: ExportS3Resource = context.resources.s3
    try:
        delete_export_objects(
            s3.get_client(), s3.resolved_bucket, s3.resolved_prefix, record["project_id"], record["id"]
        )
    except Exception as error:  # S3 unreachable: the export is final all the same
        context.log.warning(f"objects of export {record['id']} stay until the expiry pass removes them: {error}")
