"""Serialization with Polars: a lazy frame streamed into CSV / JSONL / Parquet files.

Each file is hashed while Polars writes it (sha256 for the manifest, and the MD5s S3 uses for
its ETag), so verifying the upload never reads the file again.
"""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from export_pipelines.request import Compression, CsvOptions, ExportFormat

# Uploads switch to multipart at this size, in parts of MULTIPART_CHUNK_BYTES; the expected ETag
# of a file is computed with the same part size.
MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
MULTIPART_CHUNK_BYTES = 16 * 1024 * 1024

ZONED_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f%:z"
NAIVE_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.6f"
_PART_COLUMN = "__export_part"


@dataclass(frozen=True)
class LocalArtifact:
    """A file written locally, with the figures the manifest and the upload check need."""

    path: Path
    rows: int
    bytes: int
    sha256: str
    expected_etag: str  # what S3 reports for it when uploaded with this module's multipart settings


class HashingWriter(io.RawIOBase):
    """A binary file that hashes what is written to it: sha256, and MD5s the way S3 builds ETags."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._sha256 = hashlib.sha256()
        self._whole_md5: Any = hashlib.md5()  # dropped once multipart applies
        self._part_md5 = hashlib.md5()
        self._part_bytes = 0
        self._part_md5s: list[bytes] = []
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self._file.write(view)
        self._sha256.update(view)
        self.bytes += size
        if self._whole_md5 is not None:
            self._whole_md5.update(view)
            if self.bytes >= MULTIPART_THRESHOLD_BYTES:
                self._whole_md5 = None
        while view:
            room = MULTIPART_CHUNK_BYTES - self._part_bytes
            self._part_md5.update(view[:room])
            self._part_bytes += len(view[:room])
            view = view[room:]
            if self._part_bytes == MULTIPART_CHUNK_BYTES:
                self._finish_part()
        return size

    def _finish_part(self) -> None:
        self._part_md5s.append(self._part_md5.digest())
        self._part_md5 = hashlib.md5()
        self._part_bytes = 0

    def close(self) -> None:
        if not self.closed:
            if self._part_bytes:
                self._finish_part()
            self._file.close()
        super().close()

    def artifact(self, rows: int) -> LocalArtifact:
        self.close()
        if self._whole_md5 is not None:
            etag = self._whole_md5.hexdigest()
        else:
            etag = f"{hashlib.md5(b''.join(self._part_md5s)).hexdigest()}-{len(self._part_md5s)}"
        return LocalArtifact(self.path, rows, self.bytes, self._sha256.hexdigest(), etag)


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


def write_files(
    frame: pl.LazyFrame,
    directory: Path,
    base_name: str,
    export_format: ExportFormat,
    compression: Compression,
    csv_options: CsvOptions,
    total_rows: int,
    max_rows_per_file: int | None,
) -> list[LocalArtifact]:
    """Stream `frame` into `<base_name>-<part>.<ext>` files of at most `max_rows_per_file` rows."""
    extension = file_extension(export_format, compression)
    rows_per_file = max_rows_per_file or max(total_rows, 1)
    part_count = max(1, -(-total_rows // rows_per_file))
    writers = [HashingWriter(directory / f"{base_name}-{part:05d}.{extension}") for part in range(part_count)]
    if part_count > 1:
        frame = frame.with_row_index(_PART_COLUMN).with_columns(pl.col(_PART_COLUMN) // rows_per_file)
        target = pl.PartitionBy(
            directory,
            key=_PART_COLUMN,
            include_key=False,
            approximate_bytes_per_file=None,
            file_path_provider=lambda args: writers[int(args.partition_keys[0, 0])],
        )
    else:
        target = writers[0]
    try:
        _sink(frame, target, export_format, compression, csv_options)
    finally:
        for writer in writers:
            writer.close()
    return [
        writer.artifact(min(rows_per_file, total_rows - part * rows_per_file)) for part, writer in enumerate(writers)
    ]


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
