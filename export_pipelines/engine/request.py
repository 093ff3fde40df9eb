"""The export request: the run config of `export_job` (SPEC, "The export request").

Every field carries a description because the Dagster Launchpad shows them to users.
No `from __future__ import annotations` here: Dagster resolves these annotations at runtime.
"""

from enum import Enum
from typing import Any

import dagster as dg
from pydantic import Field


class InvalidRequest(ValueError):
    """A request that cannot be exported; the message is shown to the user as is, except that a
    message over MAX_MESSAGE characters (one that quotes a huge value of the request) keeps its
    beginning and its end: every door shows it and the request table keeps it."""

    MAX_MESSAGE = 2_000

    def __init__(self, message: str):
        if len(message) > self.MAX_MESSAGE:
            head, tail = message[: self.MAX_MESSAGE // 2], message[-self.MAX_MESSAGE // 4 :]
            message = f"{head}… ({len(message) - len(head) - len(tail):,} characters left out) …{tail}"
        super().__init__(message)


class UnknownSource(InvalidRequest):
    """The request names a table or saved query that does not exist (HTTP 404)."""


class SourceNotReady(InvalidRequest):
    """The source exists but cannot be read yet: a cached table whose first copy is not made (HTTP 409)."""


class ExportFormat(Enum):
    """Output format. Lower-case spellings and `json` (= JSONL) are accepted too."""

    CSV = "CSV"
    JSONL = "JSONL"
    PARQUET = "PARQUET"
    csv = "csv"
    jsonl = "jsonl"
    json = "json"
    parquet = "parquet"

    @property
    def canonical(self) -> "ExportFormat":
        return ExportFormat("JSONL" if self.value.upper() == "JSON" else self.value.upper())

    @property
    def extension(self) -> str:
        return {"CSV": "csv", "JSONL": "jsonl", "PARQUET": "parquet"}[self.canonical.value]


class Compression(Enum):
    """CSV/JSONL: the stream compression of every artifact; Parquet: the column codec."""

    NONE = "NONE"
    GZIP = "GZIP"
    ZSTD = "ZSTD"
    none = "none"
    gzip = "gzip"
    zstd = "zstd"

    @property
    def canonical(self) -> "Compression":
        return Compression(self.value.upper())

    @property
    def suffix(self) -> str:
        return {"NONE": "", "GZIP": ".gz", "ZSTD": ".zst"}[self.canonical.value]


class SourceConfig(dg.Config):
    """Exactly one of a table or a saved query; a table of a cached catalog names its catalog too."""

    table: str | None = Field(default=None, description='A warehouse table as "schema.table", e.g. "payment.charges".')
    catalog: str | None = Field(
        default=None,
        description='With "table": the id of a cached catalog, whose cached copy of the table is read. '
        'Default (or "warehouse"): the warehouse.',
    )
    query: str | None = Field(
        default=None,
        description='A saved query: the name of a view in the warehouse schema "queries", e.g. "charges_view".',
    )


class CsvOptions(dg.Config):
    """How CSV artifacts are written; ignored for JSONL and Parquet."""

    delimiter: str = Field(default=",", description="Field separator, one character.")
    quote_char: str = Field(default='"', description="Quote character, one character.")
    header: bool = Field(default=True, description="Write a header line with the column names.")
    null_value: str = Field(default="", description="Text written for a null value.")
    line_terminator: str = Field(default="\n", description="Text that ends every line.")
    quote_style: str = Field(
        default="necessary",
        description="When to quote: necessary (fields with delimiter, quote or newline), always, non_numeric, never.",
    )
    date_format: str | None = Field(
        default=None, description="chrono format of dates, e.g. %d/%m/%Y. Default ISO-8601 (2024-01-31)."
    )
    datetime_format: str | None = Field(
        default=None,
        description="chrono format of timestamps. Default ISO-8601 with microseconds and, for zoned "
        "timestamps, the UTC offset (2024-01-31T12:00:00.000000+00:00).",
    )


class RequestedBy(dg.Config):
    """Who asked for the export, recorded on the export."""

    user_id: str | None = Field(default=None, description="Id of the requesting user.")
    user_name: str | None = Field(default=None, description="Display name of the requesting user.")
    api_key_prefix: str | None = Field(default=None, description="Prefix of the API key used, if any.")
    client_source: str | None = Field(
        default=None, description="Door the request came through: ui, graphql, table, api, cli."
    )


class ExportRequest(dg.Config):
    """An export: which rows of which source, shaped how, written in which format."""

    export_id: str | None = Field(
        default=None, description="Id of the export. Runs launched without one use the Dagster run id."
    )
    project_id: str = Field(default="default", description="Project the export belongs to.")
    source: SourceConfig = Field(description="The warehouse table or saved query to export.")
    format: ExportFormat = Field(default=ExportFormat.CSV, description="CSV, JSONL or PARQUET.")
    compression: Compression | None = Field(
        default=None,
        description="NONE, GZIP or ZSTD. Default NONE for CSV/JSONL and ZSTD for Parquet.",
    )
    columns: list[str] | None = Field(
        default=None,
        description="Columns to export, in this order; metadata.title selects a nested struct field. "
        "Default: every column.",
    )
    limit: int | None = Field(
        default=None,
        description="Maximum rows to export, clamped to [1, max_rows]. Without it, a result larger "
        "than max_rows fails the export.",
    )
    include_system_columns: bool = Field(
        default=True, description="Keep system columns (names starting with _, e.g. _id, _version)."
    )
    include_vectors: bool = Field(
        default=False,
        description="Write vector columns (fixed-size float arrays) to a separate <name>_vectors artifact.",
    )
    csv_options: CsvOptions | None = Field(default=None, description="CSV writing options.")
    filters: dict[str, Any] | None = Field(
        default=None,
        description="Row filter: {AND: [...], OR: [...], NOT: [...], case_sensitive: bool}; a condition "
        "is {field, operator, value} or a nested group.",
    )
    expand_array: str | None = Field(default=None, description="A list field to expand into one row per item.")
    order_by: list[str] | None = Field(
        default=None, description="Fields that order the output; a leading - sorts descending."
    )
    max_rows_per_file: int | None = Field(
        default=None, description="Split the output into parts of at most this many rows."
    )
    max_bytes_per_file: int | None = Field(
        default=None,
        description="Split the output into parts of about this many bytes as stored (after compression; "
        "at least 5 MiB), estimated from the first 20,000 rows.",
    )
    name: str | None = Field(default=None, description="Base name of the artifacts. Default: export.")
    requested_by: RequestedBy | None = Field(default=None, description="Who asked for the export.")

    @property
    def resolved_format(self) -> ExportFormat:
        return self.format.canonical

    @property
    def resolved_compression(self) -> Compression:
        if self.compression is not None:
            return self.compression.canonical
        return Compression.ZSTD if self.resolved_format is ExportFormat.PARQUET else Compression.NONE
