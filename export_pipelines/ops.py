"""The steps of `export_job`, as a user sees them in the Dagster UI.

Rows flow between the steps as lazy DuckDB relations (nothing is materialized or pickled until
Polars streams them into files), so the job runs in one process with an in-memory IO manager.
"""

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from export_pipelines import shaping
from export_pipelines.artifacts import (
    ExportS3Resource,
    check_key_segment,
    delete_keys,
    export_key_prefix,
    list_keys,
    put_manifest,
    upload_verified,
)
from export_pipelines.policy import ExportPolicy
from export_pipelines.request import (
    Compression,
    CsvOptions,
    ExportFormat,
    ExportRequest,
    InvalidRequest,
)
from export_pipelines.store import ExportConflict, ExportStatus, ExportStoreResource
from export_pipelines.warehouse import WarehouseResource, WarehouseSource, resolve_source
from export_pipelines.writer import LocalArtifact, prepare_csv_frame, write_files

_NOT_SUPPORTED_YET = ("filters", "expand_array", "order_by")


@dataclass(frozen=True)
class ResolvedExport:
    """A request checked against the warehouse: what to read and how to write it."""

    export_id: str
    project_id: str
    request: ExportRequest
    source: WarehouseSource
    format: ExportFormat
    compression: Compression
    base_name: str
    key_prefix: str
    started_at: datetime
    started_monotonic: float


@dataclass(frozen=True)
class ExportRows:
    """The rows to export, as a lazy relation, and how many there will be once limited."""

    export: ResolvedExport
    relation: duckdb.DuckDBPyRelation
    row_count: int | None = None


@dataclass(frozen=True)
class WrittenExport:
    export: ResolvedExport
    directory: Path
    artifacts: list[LocalArtifact]
    schema: list[dict[str, str]]
    row_count: int


@dataclass(frozen=True)
class UploadedExport:
    export: ResolvedExport
    files: list[dict[str, Any]]
    schema: list[dict[str, str]]
    row_count: int


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a bad request as one clear message in the UI, not as a stack trace."""
    try:
        yield
    except (InvalidRequest, ExportConflict) as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


def request_record(config: ExportRequest) -> dict[str, Any]:
    """The request as JSON, the way the request table keeps it."""
    return config.model_dump(mode="json", exclude_none=True)


@dg.op(description="Check the request against the warehouse catalog and mark the export RUNNING.")
def resolve_request(
    context: dg.OpExecutionContext,
    config: ExportRequest,
    warehouse: WarehouseResource,
    export_store: ExportStoreResource,
    s3: ExportS3Resource,
) -> ExportRows:
    export_id = config.export_id or context.run_id
    started_at = datetime.now(UTC)
    with user_errors():
        check_key_segment("export_id", export_id)
        check_key_segment("project_id", config.project_id)
        requested_by = config.requested_by.model_dump() if config.requested_by else {}
        requested_by.setdefault("client_source", "ui")
        export_store.get_store().start(
            export_id, config.project_id, request_record(config), requested_by, context.run_id
        )
        unsupported = [name for name in _NOT_SUPPORTED_YET if getattr(config, name) is not None]
        if config.include_vectors:
            unsupported.append("include_vectors")
        if unsupported:
            raise InvalidRequest(f"not supported yet: {', '.join(unsupported)}")
        if config.max_rows_per_file is not None and config.max_rows_per_file < 1:
            raise InvalidRequest("max_rows_per_file must be at least 1")
        connection = warehouse.run_connection
        source = resolve_source(connection, config.source)
        base_name = config.name or source.name
        check_key_segment("name", base_name)
    export = ResolvedExport(
        export_id=export_id,
        project_id=config.project_id,
        request=config,
        source=source,
        format=config.resolved_format,
        compression=config.resolved_compression,
        base_name=base_name,
        key_prefix=export_key_prefix(s3.resolved_prefix, config.project_id, export_id),
        started_at=started_at,
        started_monotonic=time.monotonic(),
    )
    export_store.get_store().describe(export_id, source.display_name, export.format.value, export.compression.value)
    relation = connection.sql(f"SELECT * FROM {source.sql_name}")
    context.log.info(f"Export {export_id}: {source.display_name} as {export.format.value}/{export.compression.value}")
    context.add_output_metadata(
        {
            "export_id": export_id,
            "project_id": config.project_id,
            "source": source.display_name,
            "format": export.format.value,
            "compression": export.compression.value,
            "source_columns": len(relation.columns),
        }
    )
    return ExportRows(export, relation)


@dg.op(description="Select the requested columns (dot notation reaches nested struct fields).")
def select_columns(context: dg.OpExecutionContext, rows: ExportRows) -> ExportRows:
    with user_errors():
        relation = shaping.select_columns(rows.relation, rows.export.request.columns)
    context.add_output_metadata({"columns": ", ".join(relation.columns)})
    return ExportRows(rows.export, relation)


@dg.op(description="Leave out plumbing, vector and (on request) system columns; apply the row limit.")
def apply_row_rules(context: dg.OpExecutionContext, rows: ExportRows, policy: ExportPolicy) -> ExportRows:
    request = rows.export.request
    max_rows = policy.resolved_max_rows
    with user_errors():
        rules = shaping.column_rules(rows.relation, request.include_system_columns)
        if not rules.kept:
            raise InvalidRequest("no columns left to export after leaving out system, plumbing and vector columns")
        explicit_system = [c for c in rules.dropped_system if request.columns and c in request.columns]
        if explicit_system:
            context.log.warning(
                f"include_system_columns is false: left out {', '.join(explicit_system)} although requested"
            )
        limit = shaping.clamp_limit(request.limit, max_rows)
        relation = shaping.project(rows.relation, rules.kept)
        row_count = shaping.count_rows(relation, limit, max_rows)
    if limit is not None:
        relation = relation.limit(limit)
    context.log.info(f"{row_count:,} rows to export")
    context.add_output_metadata(
        {
            "rows": row_count,
            "limit": limit if limit is not None else "none",
            "left_out_system_columns": ", ".join(rules.dropped_system) or "none",
            "left_out_vector_columns": ", ".join(rules.dropped_vectors) or "none",
        }
    )
    return ExportRows(rows.export, relation, row_count)


@dg.op(description="Stream the rows through Polars into the chosen format and compression.")
def serialize(context: dg.OpExecutionContext, rows: ExportRows) -> WrittenExport:
    export = rows.export
    assert rows.row_count is not None
    relation = rows.relation
    if export.format is ExportFormat.CSV:
        relation = shaping.json_encode_nested(relation)
    schema = [
        {"name": name, "type": str(t)} for name, t in zip(rows.relation.columns, rows.relation.types, strict=True)
    ]
    frame = relation.pl(lazy=True)
    csv_options = export.request.csv_options or CsvOptions()
    if export.format is ExportFormat.CSV:
        frame = prepare_csv_frame(frame, csv_options)
    directory = Path(tempfile.mkdtemp(prefix=f"export-{export.export_id}-"))
    started = time.monotonic()
    try:
        with user_errors():
            artifacts = write_files(
                frame,
                directory,
                export.base_name,
                export.format,
                export.compression,
                csv_options,
                rows.row_count,
                export.request.max_rows_per_file,
            )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    seconds = time.monotonic() - started
    total_bytes = sum(a.bytes for a in artifacts)
    context.log.info(f"Wrote {len(artifacts)} file(s), {total_bytes:,} bytes in {seconds:.2f}s")
    context.add_output_metadata({"files": len(artifacts), "bytes": total_bytes, "write_seconds": round(seconds, 3)})
    return WrittenExport(export, directory, artifacts, schema, rows.row_count)


@dg.op(description="Upload the files to S3 and check the stored bytes against their hashes.")
def upload(context: dg.OpExecutionContext, written: WrittenExport, s3: ExportS3Resource) -> UploadedExport:
    export = written.export
    client = s3.get_client()
    bucket = s3.resolved_bucket
    uploaded: list[str] = []
    files = []
    started = time.monotonic()
    try:
        for artifact in written.artifacts:
            key = export.key_prefix + artifact.path.name
            uploaded.append(key)
            upload_verified(client, bucket, key, artifact)
            files.append({"key": key, "bytes": artifact.bytes, "rows": artifact.rows, "sha256": artifact.sha256})
            context.log.info(f"Uploaded s3://{bucket}/{key} ({artifact.bytes:,} bytes, {artifact.rows:,} rows)")
    except BaseException:
        delete_keys(client, bucket, uploaded)
        raise
    finally:
        shutil.rmtree(written.directory, ignore_errors=True)
    context.add_output_metadata({"upload_seconds": round(time.monotonic() - started, 3)})
    return UploadedExport(export, files, written.schema, written.row_count)


@dg.op(description="Write manifest.json last and mark the export SUCCEEDED with its figures.")
def record_result(
    context: dg.OpExecutionContext,
    uploaded: UploadedExport,
    s3: ExportS3Resource,
    export_store: ExportStoreResource,
) -> None:
    export = uploaded.export
    bucket = s3.resolved_bucket
    total_bytes = sum(f["bytes"] for f in uploaded.files)
    manifest = {
        "export_id": export.export_id,
        "project_id": export.project_id,
        "source": export.source.display_name,
        "format": export.format.value,
        "compression": export.compression.value,
        "created_at": export.started_at.isoformat(),
        "rows": uploaded.row_count,
        "bytes": total_bytes,
        "files": uploaded.files,
        "schema": uploaded.schema,
        "request": request_record(export.request),
    }
    put_manifest(s3.get_client(), bucket, export.key_prefix, manifest)
    duration_ms = int((time.monotonic() - export.started_monotonic) * 1000)
    export_store.get_store().succeed(export.export_id, uploaded.row_count, total_bytes, duration_ms, uploaded.files)
    context.log.info(f"Export {export.export_id} SUCCEEDED: {uploaded.row_count:,} rows, {total_bytes:,} bytes")
    context.add_output_metadata(
        {
            "export_id": export.export_id,
            "rows": uploaded.row_count,
            "bytes": total_bytes,
            "duration_ms": duration_ms,
            "files": dg.MetadataValue.json(uploaded.files),
            "manifest": dg.MetadataValue.url(f"s3://{bucket}/{export.key_prefix}manifest.json"),
            **{
                f"file_{index}": dg.MetadataValue.url(f"s3://{bucket}/{f['key']}")
                for index, f in enumerate(uploaded.files)
            },
        }
    )


@dg.failure_hook(required_resource_keys={"export_store", "s3"})
def record_export_failure(context: dg.HookContext) -> None:
    """A failed step fails the export: its row becomes FAILED and no object stays behind."""
    store = context.resources.export_store.get_store()
    record = store.find_by_run(context.run_id)
    if record is None or record["status"] != ExportStatus.RUNNING:
        return
    error = context.op_exception
    if isinstance(error, dg.Failure) and error.description:
        message = error.description
    else:
        message = f"{type(error).__name__}: {error}" if error is not None else f"step {context.op.name} failed"
    s3: ExportS3Resource = context.resources.s3
    client = s3.get_client()
    prefix = export_key_prefix(s3.resolved_prefix, record["project_id"], record["id"])
    delete_keys(client, s3.resolved_bucket, list_keys(client, s3.resolved_bucket, prefix))
    store.fail(record["id"], message)
    context.log.error(f"Export {record['id']} FAILED: {message}")
