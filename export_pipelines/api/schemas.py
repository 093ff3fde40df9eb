"""The REST API's bodies and answers (SPEC, "REST API"): camelCase JSON, every field described, so
that `/docs` is the user documentation of the HTTP door."""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from export_pipelines.engine.request import Compression, ExportFormat


def _iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


UtcTime = Annotated[datetime, PlainSerializer(_iso_utc, return_type=str, when_used="json")]


class CamelModel(BaseModel):
    """A body: camelCase names only, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")


class CamelView(BaseModel):
    """An answer: camelCase on the wire, built from snake_case names in code."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CsvOptionsBody(CamelModel):
    """How CSV files are written; ignored for JSONL and Parquet."""

    delimiter: str | None = Field(None, description="Field separator, one character. Default `,`.")
    quote_char: str | None = Field(None, description='Quote character, one character. Default `"`.')
    header: bool | None = Field(None, description="Write a header line with the column names. Default true.")
    null_value: str | None = Field(None, description="Text written for a null value. Default empty.")
    line_terminator: str | None = Field(None, description="Text that ends every line. Default `\\n`.")
    quote_style: str | None = Field(None, description="When to quote: necessary (default), always, non_numeric, never.")
    date_format: str | None = Field(None, description="chrono format of dates, e.g. `%d/%m/%Y`. Default ISO-8601.")
    datetime_format: str | None = Field(None, description="chrono format of timestamps. Default ISO-8601.")


class CreateExportBody(CamelModel):
    """The export request in camelCase; every field is optional and unknown fields are refused."""

    format: ExportFormat | None = Field(None, description="CSV (default), JSONL (`json` too) or PARQUET.")
    compression: Compression | None = Field(
        None, description="NONE, GZIP or ZSTD. Default NONE for CSV/JSONL, ZSTD (the column codec) for Parquet."
    )
    limit: int | None = Field(
        None,
        description="Maximum rows, clamped to [1, max_rows]. Without it a result over max_rows fails the export.",
        examples=[1000],
    )
    columns: list[str] | None = Field(
        None,
        description="Columns in this order; dot notation selects nested fields (`metadata.title`). Default: all.",
        examples=[["id", "created_at", "amount"]],
    )
    include_system_columns: bool | None = Field(
        None, description="Keep system columns (names starting with `_`). Default true."
    )
    include_vectors: bool | None = Field(
        None, description="Write vector columns to a separate `<name>_vectors` file keyed by the row key."
    )
    csv_options: CsvOptionsBody | None = Field(None, description="CSV writing options.")
    filters: dict[str, Any] | None = Field(
        None,
        description="Row filter `{AND: [...], OR: [...], NOT: [...], case_sensitive}`; a condition is "
        "`{field, operator, value}` or a nested group; operators eq ne gt gte lt lte in nin contains "
        "starts_with ends_with regex is_null.",
        examples=[{"AND": [{"field": "amount", "operator": "gte", "value": 100}]}],
    )
    expand_array: str | None = Field(None, description="A list field to expand into one row per item.")
    order_by: list[str] | None = Field(None, description="Fields that order the output; a leading `-` descends.")
    max_rows_per_file: int | None = Field(None, description="Split the output into files of at most this many rows.")
    max_bytes_per_file: int | None = Field(
        None,
        description="Split the output into files of about this many bytes as stored (after compression; at least "
        "5 MiB), estimated from the first 20,000 rows.",
        examples=[104_857_600],
    )
    name: str | None = Field(None, description="Base name of the files. Default: the source's name.")

    def as_request(self) -> dict[str, Any]:
        """The export request (snake_case, as the job takes it) of the fields given."""
        return self.model_dump(mode="json", exclude_none=True)


class FileView(CamelView):
    """One file of an export with its presigned download link."""

    name: str = Field(description="File name (the last part of its S3 key).", examples=["charges-00000.csv"])
    url: str = Field(description="Presigned GET URL, valid until `expiresAt`.")
    bytes: int = Field(description="Size as stored (after compression).")
    rows: int = Field(description="Rows in this file.")
    sha256: str = Field(description="SHA-256 of the file's bytes, hex.")


class ProgressView(CamelView):
    """How far a RUNNING export has come."""

    rows_written: int = Field(description="Rows handed to the writer so far.", examples=[1_200_000])
    total_rows: int | None = Field(
        description="Rows the export writes in all; null until counted, which happens before writing starts.",
        examples=[3_000_000],
    )


class ExportView(CamelView):
    """An export as the API shows it."""

    id: str = Field(description="Export id.", examples=["5b1d0c3e-8f43-4f7e-9d8a-1f0c2f6b9a10"])
    project_id: str = Field(description="Project the export belongs to.", examples=["acme"])
    status: str = Field(
        description="PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED or EXPIRED.", examples=["SUCCEEDED"]
    )
    format: str | None = Field(description="CSV, JSONL or PARQUET, as resolved.", examples=["CSV"])
    compression: str | None = Field(description="NONE, GZIP or ZSTD, as resolved.", examples=["NONE"])
    row_count: int | None = Field(description="Rows exported (once SUCCEEDED).", examples=[993])
    bytes: int | None = Field(description="Bytes of all files (once SUCCEEDED).", examples=[48213])
    duration_ms: int | None = Field(description="Run time of the export in milliseconds.", examples=[1055])
    progress: ProgressView | None = Field(description="Rows written so far and the total, while RUNNING.")
    files: list[FileView] | None = Field(
        description="The files with download links: only for the owner, only once SUCCEEDED."
    )
    expires_at: UtcTime | None = Field(description="When the links in `files` expire.")
    downloadable: bool = Field(description="Whether this caller may download the export now.")
    error: str | None = Field(description="Why the export failed.")
    created_at: UtcTime = Field(description="When the export was requested (UTC).")
    started_at: UtcTime | None = Field(description="When its run started.")
    finished_at: UtcTime | None = Field(description="When it became final.")
    query_id: str | None = Field(description="The saved query exported, for a query export.")
    catalog_id: str | None = Field(description="The catalog of the table exported (`warehouse`).")
    schema_name: str | None = Field(description="The schema of the table exported.")
    table_name: str | None = Field(description="The table exported.")
    source: str | None = Field(description="Quoted, fully-qualified source.", examples=['warehouse.payment."charges"'])
    name: str | None = Field(description="Base name of the files.")
    user_id: str | None = Field(description="Who created the export (its owner).")
    user_name: str | None = Field(description="The owner's display name.")
    api_key_prefix: str | None = Field(description="Prefix of the API key that created it.")
    client_source: str | None = Field(description="X-Trino-Source or User-Agent of the create, or the door.")


class CreatedView(CamelView):
    """The answer to a create: the export id and its status."""

    id: str = Field(description="Export id; poll `GET …/exports/{id}`.")
    status: str = Field(description="PENDING until the export runs.", examples=["PENDING"])


class ColumnView(CamelView):
    name: str = Field(description="Column name in the files.", examples=["amount"])
    type: str = Field(description="Its warehouse type.", examples=["DECIMAL(12,2)"])


class PreviewView(CamelView):
    """What the export would write (`?dryRun=true`); nothing is queued."""

    row_count: int = Field(description="Rows the export would write, after filters, expansion and the limit.")
    columns: list[ColumnView] = Field(description="The output columns, in order, with their types.")
    sample: list[dict[str, Any]] = Field(description="The first 10 rows, as the JSONL format writes them.")


class DownloadView(CamelView):
    """Download links of a SUCCEEDED export."""

    url: str = Field(description="Presigned URL of the first data file.")
    expires_at: UtcTime = Field(description="When the links expire.")
    files: list[FileView] = Field(description="Every file of the export, with its link.")


class MessageView(BaseModel):
    message: str = Field(description="What happened.", examples=["Export deleted successfully"])


class ErrorView(BaseModel):
    error: str = Field(description="One clear message.", examples=["unknown column zzz; available: id, amount"])


class HealthView(BaseModel):
    status: str = Field(description="`ok` while the request table is reachable.", examples=["ok"])


class ScheduleView(BaseModel):
    """A refresh schedule."""

    type: str = Field(description="BASIC (an ISO-8601 duration) or CRON (five fields, UTC).", examples=["BASIC"])
    expression: str = Field(description="`PT6H`, `P1D`, … or `0 */6 * * *`.", examples=["PT6H"])


class CacheView(CamelView):
    """A cache entry: a project's cached copy of a catalog table, and how it is kept fresh."""

    id: str = Field(description="Cache entry id.")
    app_id: str = Field(description="The project the entry belongs to.", examples=["acme"])
    catalog_id: str = Field(description="The catalog of the table.", examples=["627249916703408649"])
    schema_name: str = Field(description="Schema of the table.", examples=["public"])
    table_name: str = Field(description="The table.", examples=["charges"])
    incremental_cache_schedule: ScheduleView | None = Field(description="When incremental refreshes run.")
    full_refresh_cache_schedule: ScheduleView | None = Field(description="When full refreshes run.")
    status: str = Field(
        description="PENDING (no copy yet), REFRESHING, READY (last refresh succeeded) or FAILED (last refresh "
        "failed; the previous copy, if any, is still exported).",
        examples=["READY"],
    )
    row_count: int | None = Field(description="Rows in the current copy.", examples=[1_000_000])
    last_refresh_at: UtcTime | None = Field(description="Time of the source snapshot of the current copy.")
    last_full_refresh_at: UtcTime | None = Field(description="Time of the last full refresh's snapshot.")
    next_refresh_at: UtcTime | None = Field(description="When the next scheduled refresh falls due.")
    error: str | None = Field(description="Why the last refresh failed.")
    created_at: UtcTime = Field(description="When the entry was created.")
    updated_at: UtcTime = Field(description="When the entry last changed.")


class CacheBatchResultView(BaseModel):
    """One item's answer in a batch create, in the order of the items."""

    success: bool = Field(description="Whether the item created or updated its entry.")
    error: str | None = Field(description="Why the item failed.")
    cache: CacheView | None = Field(description="The entry, created or with its schedules updated.")
