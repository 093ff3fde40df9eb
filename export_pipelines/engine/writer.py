"""Serialization with Polars: a lazy frame streamed into CSV / JSONL / Parquet files.

The files are any binary writers (the export streams them straight into S3); CSV and JSONL are
compressed on every core (`compression`). Parts are cut by row number so that part k always holds
the same rows, and written one after the other from one reader of the rows.
"""

import io
from collections.abc import Callable
from typing import IO, Any

import polars as pl

from export_pipelines.engine.compression import Compressor
from export_pipelines.engine.request import Compression, CsvOptions, ExportFormat
from export_pipelines.engine.row_source import RowSource

ZONED_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f%:z"
NAIVE_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f"
SIZE_SAMPLE_ROWS = 20_000  # rows written to measure a part's bytes per row (max_bytes_per_file)
# Rows per morsel of Polars' streaming engine while it writes (its default: 100,000). Smaller
# morsels hold less in flight: writing 1M rows of CSV/GZIP peaked 100 MiB lower with 25,000 than
# with 100,000, and 75 MiB lower again with 10,000 (writing 0-7% slower; 5,000: 20 MiB less, 2-11%
# slower).
STREAMING_CHUNK_ROWS = 10_000
# Rows per Parquet row group. Polars' own (its morsels, about 90,000 rows here) made a whole Parquet
# export of 1M rows peak 400-470 MiB: its sink holds several row groups while it waits for S3.
# Uncompressed groups are the largest: 20,000 rows held 50-55 MiB less (files 3% larger). Compressed
# ones compress worse in small groups (zstd: 14% larger at 20,000 rows): 50,000 held 10-15 MiB less,
# files within 1%.
PARQUET_ROW_GROUP_ROWS = {Compression.NONE: 20_000, Compression.GZIP: 50_000, Compression.ZSTD: 50_000}
PARQUET_CODECS = {Compression.NONE: "uncompressed", Compression.GZIP: "gzip", Compression.ZSTD: "zstd"}


def file_extension(export_format: ExportFormat, compression: Compression) -> str:
    """`csv`, `jsonl.gz`, `parquet`, ... (Parquet compresses inside the file)."""
    if export_format is ExportFormat.PARQUET:
        return "parquet"
    return export_format.extension + compression.suffix


def prepare_csv_batch(frame: pl.DataFrame, options: CsvOptions) -> pl.DataFrame:
    """Timestamps as ISO-8601 text (with the UTC offset when zoned), or the user's format."""
    conversions = []
    for name, dtype in frame.schema.items():
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


class Sink:
    """Writes lazy frames into files, or into parts, in one format and compression, one file after
    the other (the compression's threads and buffers serve them all). Close it when done."""

    def __init__(self, export_format: ExportFormat, compression: Compression, csv_options: CsvOptions):
        self.export_format, self.compression, self.csv_options = export_format, compression, csv_options
        text_compressed = export_format is not ExportFormat.PARQUET and compression is not Compression.NONE
        self._compressor = Compressor(compression) if text_compressed else None

    def close(self) -> None:
        """Stop the compression threads."""
        if self._compressor is not None:
            self._compressor.close()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def parts(
        self,
        source: RowSource,
        part_count: int,
        max_rows_per_file: int | None,
        open_part: Callable[[int], IO[bytes]],
        part_written: Callable[[int], None],
    ) -> None:
        """Stream the rows of `source` into `part_count` files, one after the other: part k holds
        rows [k * max_rows_per_file, ...) and goes into the file `open_part(k)` opens when the part
        begins; `part_written(k)` hears when it is written, before the next part begins."""
        for part in range(part_count):
            self(source.frame(max_rows_per_file if part < part_count - 1 else None), open_part(part))
            part_written(part)

    def __call__(self, frame: pl.LazyFrame, target: IO[bytes]) -> None:
        """Stream `frame` into `target`, a binary file. CSV and JSONL are written as text by Polars
        and compressed on every core (`compression`); Parquet compresses its own pages."""
        with pl.Config(streaming_chunk_size=STREAMING_CHUNK_ROWS):
            if self.export_format is ExportFormat.PARQUET:
                frame.sink_parquet(
                    target,
                    compression=PARQUET_CODECS[self.compression],
                    row_group_size=PARQUET_ROW_GROUP_ROWS[self.compression],
                )
            elif self._compressor is None:
                self._sink_text(frame, target)
            else:
                with self._compressor.writer(target) as compressing:
                    self._sink_text(frame, compressing)
                    compressing.finish()

    def _sink_text(self, frame: pl.LazyFrame, target: IO[bytes]) -> None:
        if self.export_format is ExportFormat.JSONL:
            frame.sink_ndjson(target, check_extension=False)
        else:
            options = self.csv_options
            frame.sink_csv(
                target,
                check_extension=False,
                include_header=options.header,
                separator=options.delimiter,
                quote_char=options.quote_char,
                null_value=options.null_value,
                line_terminator=options.line_terminator,
                quote_style=options.quote_style,
                date_format=options.date_format,
            )


def rows_per_file(
    max_rows_per_file: int | None, max_bytes_per_file: int, sample: pl.LazyFrame, sampled_rows: int, sink: Sink
) -> int | None:
    """Rows per part so that a part comes to about `max_bytes_per_file` as stored (and holds at
    most `max_rows_per_file`). The bytes per row are measured by writing `sample` (the first
    `sampled_rows` rows, SIZE_SAMPLE_ROWS at most) the way the parts are written, compression
    included."""
    if sampled_rows == 0:
        return max_rows_per_file
    counter = _ByteCounter()
    sink(sample, counter)
    if counter.bytes == 0:
        return max_rows_per_file
    by_bytes = max(1, max_bytes_per_file * sampled_rows // counter.bytes)
    return min(by_bytes, max_rows_per_file or by_bytes)


class _ByteCounter(io.RawIOBase):
    """A binary file that keeps nothing but the count of bytes written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = memoryview(data).nbytes
        self.bytes += written
        return written
