"""Serialization with Polars: a lazy frame streamed into CSV / JSONL / Parquet files.

The files are any binary writers (the export streams them straight into S3); parts are cut
by row number so that part k always holds the same rows.
"""

from collections.abc import Sequence
from typing import IO, Any

import polars as pl

from export_pipelines.engine.request import Compression, CsvOptions, ExportFormat

ZONED_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f%:z"
NAIVE_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f"
_PART_COLUMN = "__export_part"


def file_extension(export_format: ExportFormat, compression: Compression) -> str:
    """`csv`, `jsonl.gz`, `parquet`, ... (Parquet compresses inside the file)."""
    if export_format is ExportFormat.PARQUET:
        return "parquet"
    return export_format.extension + compression.suffix


def prepare_csv_frame(frame: pl.LazyFrame, options: CsvOptions) -> pl.LazyFrame:
    """Timestamps as ISO-8601 text (with the UTC offset when zoned), or the user's format."""
    conversions = []
    for name, dtype in frame.collect_schema().items():
        if isinstance(dtype, pl.Datetime):
            default = ZONED_DATETIME_FORMAT if dtype.time_zone else NAIVE_DATETIME_FORMAT
            conversions.append(pl.col(name).dt.to_string(options.datetime_format or default))
    return frame.with_columns(conversions) if conversions else frame


def part_file_names(base_name: str, extension: str, total_rows: int, max_rows_per_file: int | None) -> list[str]:
    """`<base_name>-<part>.<ext>` for every part the rows need (at least one, even when empty)."""
    rows_per_file = max_rows_per_file or max(total_rows, 1)
    part_count = max(1, -(-total_rows // rows_per_file))
    return [f"{base_name}-{part:05d}.{extension}" for part in range(part_count)]


def rows_in_part(part: int, total_rows: int, max_rows_per_file: int | None) -> int:
    rows_per_file = max_rows_per_file or max(total_rows, 1)
    return max(0, min(rows_per_file, total_rows - part * rows_per_file))


def write_parts(
    frame: pl.LazyFrame,
    targets: Sequence[IO[bytes]],
    export_format: ExportFormat,
    compression: Compression,
    csv_options: CsvOptions,
    max_rows_per_file: int | None,
) -> None:
    """Stream `frame` into `targets`, part k holding rows [k * max_rows_per_file, ...)."""
    if len(targets) > 1:
        assert max_rows_per_file is not None
        frame = frame.with_row_index(_PART_COLUMN).with_columns(pl.col(_PART_COLUMN) // max_rows_per_file)
        target: Any = pl.PartitionBy(
            "",
            key=_PART_COLUMN,
            include_key=False,
            approximate_bytes_per_file=None,
            file_path_provider=lambda args: targets[int(args.partition_keys[0, 0])],
        )
    else:
        target = targets[0]
    _sink(frame, target, export_format, compression, csv_options)


def _sink(
    frame: pl.LazyFrame,
    target,
    export_format: ExportFormat,
    compression: Compression,
    csv_options: CsvOptions,
) -> None:
    stream_compression = {Compression.NONE: "uncompressed", Compression.GZIP: "gzip", Compression.ZSTD: "zstd"}[
        compression
    ]
    if export_format is ExportFormat.PARQUET:
        frame.sink_parquet(target, compression=stream_compression)
    elif export_format is ExportFormat.JSONL:
        frame.sink_ndjson(target, compression=stream_compression, check_extension=False)
    else:
        frame.sink_csv(
            target,
            compression=stream_compression,
            check_extension=False,
            include_header=csv_options.header,
            separator=csv_options.delimiter,
            quote_char=csv_options.quote_char,
            null_value=csv_options.null_value,
            line_terminator=csv_options.line_terminator,
            quote_style=csv_options.quote_style,
            date_format=csv_options.date_format,
        )
