"""The export path, step by step, as plain functions: the ops of `export_job` call these
(adding logs and metadata), and the benchmark times them without Dagster's run machinery.

Rows flow between the steps as lazy DuckDB relations; nothing is materialized until Polars
streams the rows into files that are uploaded while they are written.
"""

import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
from duckdb import ColumnExpression

from export_pipelines.engine import shaping
from export_pipelines.engine.artifacts import (
    PartObjects,
    S3UploadWriter,
    UploadedArtifact,
    check_key_segment,
    delete_keys,
    export_key_prefix,
    put_manifest,
    verify_uploaded,
)
from export_pipelines.engine.filters import compile_filters
from export_pipelines.engine.part_buffers import PartBuffers
from export_pipelines.engine.request import Compression, CsvOptions, ExportFormat, ExportRequest, InvalidRequest
from export_pipelines.engine.row_source import RowSource
from export_pipelines.engine.warehouse import WarehouseSource, resolve_source
from export_pipelines.engine.writer import (
    SIZE_SAMPLE_ROWS,
    Sink,
    file_extension,
    part_file_names,
    prepare_csv_batch,
    rows_in_part,
    rows_per_file,
)

VECTOR_KEY_COLUMN = "__row_key"
MIN_BYTES_PER_FILE = 5 * 1024 * 1024


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

    @property
    def description(self) -> dict[str, str]:
        """What the request table shows of the export: source, format, compression and name."""
        return {
            "source": self.source.display_name,
            "format": self.format.value,
            "compression": self.compression.value,
            "name": self.base_name,
        }


@dataclass(frozen=True)
class ExportRows:
    """The rows to export as a lazy relation; `row_count` is known once the rules applied."""

    export: ResolvedExport
    relation: duckdb.DuckDBPyRelation
    row_count: int | None = None
    rules: shaping.ColumnRules | None = None
    limit: int | None = None
    vector_key: str | None = None  # the row key column keying the vectors artifact, on request
    vectors: duckdb.DuckDBPyRelation | None = None  # that key and the vector columns


@dataclass(frozen=True)
class WrittenExport:
    export: ResolvedExport
    artifacts: list[UploadedArtifact]
    schema: list[dict[str, str]]
    row_count: int

    @property
    def bytes(self) -> int:
        return sum(artifact.bytes for artifact in self.artifacts)


def request_record(request: ExportRequest) -> dict[str, Any]:
    """The request as JSON, the way the request table and the manifest keep it."""
    return request.model_dump(mode="json", exclude_none=True)


def plan(
    request: ExportRequest,
    export_id: str,
    connection: duckdb.DuckDBPyConnection,
    s3_prefix: str,
    catalog_name: str | None = None,
) -> ExportRows:
    """Check the request's own fields and find its source in the catalog (no side effects).
    `catalog_name`: how to show the catalog of a cached copy."""
    started_at = datetime.now(UTC)
    started_monotonic = time.monotonic()
    check_key_segment("export_id", export_id)
    check_key_segment("project_id", request.project_id)
    if request.max_rows_per_file is not None and request.max_rows_per_file < 1:
        raise InvalidRequest("max_rows_per_file must be at least 1")
    if request.max_bytes_per_file is not None and request.max_bytes_per_file < MIN_BYTES_PER_FILE:
        raise InvalidRequest(f"max_bytes_per_file must be at least 5 MiB ({MIN_BYTES_PER_FILE:,} bytes)")
    source = resolve_source(connection, request.source, catalog_name)
    base_name = request.name or source.name
    check_key_segment("name", base_name)
    export = ResolvedExport(
        export_id=export_id,
        project_id=request.project_id,
        request=request,
        source=source,
        format=request.resolved_format,
        compression=request.resolved_compression,
        base_name=base_name,
        key_prefix=export_key_prefix(s3_prefix, request.project_id, export_id),
        started_at=started_at,
        started_monotonic=started_monotonic,
    )
    return _source_rows(export, connection)


def _source_rows(export: ResolvedExport, connection: duckdb.DuckDBPyConnection) -> ExportRows:
    return ExportRows(export, connection.sql(f"SELECT * FROM {export.source.sql_name}"))


def read_again(rows: ExportRows, connection: duckdb.DuckDBPyConnection, max_rows: int) -> ExportRows:
    """The rows of the same export read through `connection` (its source opened again), through
    the steps `rows` went through."""
    again = select(shape(_source_rows(rows.export, connection)))
    return again if rows.row_count is None else apply_rules(again, max_rows, lambda _message: None)


def validate(
    request: ExportRequest, export_id: str, connection: duckdb.DuckDBPyConnection, catalog_name: str | None = None
) -> ResolvedExport:
    """Every check `export_job` makes before it reads a row, without reading or writing anything:
    what a door runs to refuse a bad request up front. Returns the export as resolved."""
    rows = select(shape(plan(request, export_id, connection, "", catalog_name)))
    _column_rules(rows)
    return rows.export


@dataclass(frozen=True)
class Preview:
    """What an export would write, without writing it."""

    row_count: int
    columns: list[dict[str, str]]
    sample: list[dict[str, Any]]


def preview(
    request: ExportRequest,
    connection: duckdb.DuckDBPyConnection,
    max_rows: int,
    sample_rows: int = 10,
    catalog_name: str | None = None,
) -> Preview:
    """The row count, output columns and first rows of the export `request` asks for, with the same
    checks, filters, expansion, column rules and limit as the export; reads, writes nothing."""
    rows = apply_rules(
        select(shape(plan(request, "preview", connection, "", catalog_name))), max_rows, lambda _message: None
    )
    assert rows.row_count is not None
    # As the JSONL artifact writes them: ISO-8601 times, exact decimals, nested values as JSON.
    lines = rows.relation.limit(sample_rows).pl().write_ndjson().splitlines()
    return Preview(rows.row_count, output_schema(rows.relation), [json.loads(line) for line in lines])


def output_schema(relation: duckdb.DuckDBPyRelation) -> list[dict[str, str]]:
    """The columns an export writes, with their warehouse types (the manifest's `schema`)."""
    return [{"name": n, "type": str(t)} for n, t in zip(relation.columns, relation.types, strict=True)]


def shape(rows: ExportRows) -> ExportRows:
    """Filter the source rows, expand a list field into rows, and order them."""
    request = rows.export.request
    relation = rows.relation
    if request.filters is not None:
        relation = relation.filter(compile_filters(relation, request.filters))
    if request.expand_array is not None:
        relation = shaping.expand_array(relation, request.expand_array)
    order_by = request.order_by
    if order_by is None and request.include_vectors and request.limit is not None:
        # Both artifacts must hold the same rows: a limit takes them in row-key order.
        order_by = [_vector_key(relation)]
    if order_by is not None:
        relation = shaping.order_rows(relation, order_by)
    return ExportRows(rows.export, relation)


def select(rows: ExportRows) -> ExportRows:
    """Project the requested columns (and, for the vectors artifact, the row key)."""
    request = rows.export.request
    selected = shaping.select_columns(rows.relation, request.columns)
    if not request.include_vectors:
        return ExportRows(rows.export, selected)
    key = _vector_key(rows.relation)
    keyed = rows.relation.select(
        *(ColumnExpression(c) for c in rows.relation.columns), ColumnExpression(key).alias(VECTOR_KEY_COLUMN)
    )
    if request.columns is not None:
        keyed = shaping.select_columns(keyed, [*request.columns, VECTOR_KEY_COLUMN])
    return ExportRows(rows.export, keyed, vector_key=key)


def _vector_key(relation: duckdb.DuckDBPyRelation) -> str:
    key = shaping.row_key(relation)
    if key is None:
        raise InvalidRequest("include_vectors needs a row key column (id, _id or document_id) in the source")
    return key


def _column_rules(rows: ExportRows) -> shaping.ColumnRules:
    request = rows.export.request
    selected = rows.relation
    if request.include_vectors:
        selected = shaping.project(selected, [c for c in selected.columns if c != VECTOR_KEY_COLUMN])
    rules = shaping.column_rules(selected, request.include_system_columns)
    if not rules.kept:
        raise InvalidRequest("no columns left to export after leaving out system, plumbing and vector columns")
    if request.include_vectors and not rules.dropped_vectors:
        raise InvalidRequest("include_vectors is true but the selected columns hold no vector column")
    return rules


def apply_rules(rows: ExportRows, max_rows: int, warn: Callable[[str], None]) -> ExportRows:
    """Leave out plumbing, vector and (on request) system columns; limit and count the rows."""
    request = rows.export.request
    rules = _column_rules(rows)
    explicit_system = [c for c in rules.dropped_system if request.columns and c in request.columns]
    if explicit_system:
        warn(f"include_system_columns is false: left out {', '.join(explicit_system)} although requested")
    limit = shaping.clamp_limit(request.limit, max_rows)
    limited = rows.relation.limit(limit) if limit is not None else rows.relation
    row_count = shaping.count_rows(shaping.project(rows.relation, rules.kept), limit, max_rows)
    vectors = None
    if rows.vector_key is not None:
        vectors = limited.select(
            ColumnExpression(VECTOR_KEY_COLUMN).alias(rows.vector_key),
            *(ColumnExpression(name) for name in rules.dropped_vectors),
        )
    main = shaping.project(limited, rules.kept)
    return ExportRows(rows.export, main, row_count, rules, limit, rows.vector_key, vectors)


def serialize_to_s3(
    rows: ExportRows,
    client: Any,
    bucket: str,
    should_stop: Callable[[], bool] = lambda: False,
    on_rows: Callable[[int], None] = lambda _rows: None,
    *,
    parts_in_flight: int,
) -> WrittenExport:
    """Stream the rows through Polars into the format, each file uploaded while it is written;
    then the vectors artifact, when asked for. `should_stop` is asked once per uploaded part
    (8 MiB): when it answers true, writing stops with WritingStopped and nothing is left in S3.
    `on_rows` hears the rows of the data files taken in by the writer so far, per batch (about
    10,000 rows). At most `parts_in_flight` parts are held in memory for S3, uploaded on as many
    threads."""
    export = rows.export
    assert rows.row_count is not None
    request = export.request
    extension = file_extension(export.format, export.compression)
    stream = functools.partial(
        _stream, export=export, client=client, bucket=bucket, should_stop=should_stop, parts_in_flight=parts_in_flight
    )
    artifacts = stream(
        rows.relation,
        functools.partial(part_file_names, export.base_name, extension, rows.row_count),
        rows.row_count,
        request.max_rows_per_file,
        request.max_bytes_per_file,
        on_rows,
    )
    if rows.vectors is not None:
        vectors_name = f"{export.base_name}_vectors.{extension}"
        try:
            artifacts += stream(rows.vectors, lambda _per_file: [vectors_name], rows.row_count, None, None)
        except BaseException:
            delete_keys(client, bucket, [artifact.key for artifact in artifacts])
            raise
    return WrittenExport(export, artifacts, output_schema(rows.relation), rows.row_count)


def _stream(
    relation: duckdb.DuckDBPyRelation,
    names_for: Callable[[int | None], list[str]],
    row_count: int,
    max_rows_per_file: int | None,
    max_bytes_per_file: int | None,
    on_rows: Callable[[int], None] = lambda _rows: None,
    *,
    export: ResolvedExport,
    client: Any,
    bucket: str,
    should_stop: Callable[[], bool],
    parts_in_flight: int,
) -> list[UploadedArtifact]:
    """Write `relation` into the objects `names_for(rows per file)` names: parts of at most
    `max_rows_per_file` rows and about `max_bytes_per_file` bytes, or one object."""
    csv_options = export.request.csv_options or CsvOptions()
    if export.format is ExportFormat.CSV:
        relation = shaping.json_encode_nested(relation)

    def source_of(rows: duckdb.DuckDBPyRelation, counted: Callable[[int], None]) -> RowSource:
        if export.format is ExportFormat.CSV:
            return RowSource(rows, counted, lambda batch: prepare_csv_batch(batch, csv_options))
        return RowSource(rows, counted)

    with Sink(export.format, export.compression, csv_options) as sink:
        per_file = max_rows_per_file
        if max_bytes_per_file is not None:
            with source_of(relation.limit(SIZE_SAMPLE_ROWS), lambda _rows: None) as sample:
                sampled_rows = min(row_count, SIZE_SAMPLE_ROWS)
                per_file = rows_per_file(max_rows_per_file, max_bytes_per_file, sample.frame(), sampled_rows, sink)
        names = names_for(per_file)
        buffers = PartBuffers(parts_in_flight)
        with ThreadPoolExecutor(parts_in_flight, thread_name_prefix="s3-upload") as pool:
            objects = PartObjects(
                [S3UploadWriter(client, bucket, export.key_prefix + name, pool, buffers, should_stop) for name in names]
            )
            try:
                with source_of(relation, on_rows) as source:
                    sink.parts(source, len(names), per_file, objects.open, objects.written)
                objects.complete()
            except BaseException as failure:
                try:
                    objects.abort(client, bucket)
                except Exception as cleanup:  # S3 failing here too: the cause stays the failure's own
                    failure.add_note(f"removing the export's objects failed too ({type(cleanup).__name__}: {cleanup})")
                raise
    return [writer.uploaded(rows_in_part(part, row_count, per_file)) for part, writer in enumerate(objects.writers)]


def verify(written: WrittenExport, client: Any, bucket: str) -> None:
    """Check every object against the hashes of the bytes written; remove them all on a mismatch."""
    try:
        for artifact in written.artifacts:
            verify_uploaded(client, bucket, artifact)
    except BaseException:
        delete_keys(client, bucket, [artifact.key for artifact in written.artifacts])
        raise


def record(written: WrittenExport, client: Any, bucket: str) -> dict[str, Any]:
    """Write manifest.json last; returns it with the export's `duration_ms`."""
    export = written.export
    files = [artifact.manifest_entry() for artifact in written.artifacts]
    manifest = {
        "export_id": export.export_id,
        "project_id": export.project_id,
        "source": export.source.display_name,
        "format": export.format.value,
        "compression": export.compression.value,
        "created_at": export.started_at.isoformat(),
        "rows": written.row_count,
        "bytes": written.bytes,
        "files": files,
        "schema": written.schema,
        "request": request_record(export.request),
    }
    put_manifest(client, bucket, export.key_prefix, manifest)
    duration_ms = int((time.monotonic() - export.started_monotonic) * 1000)
    return {**manifest, "duration_ms": duration_ms}
