"""The writer's parts, in memory: exact row boundaries in every format, each part written whole
before the next begins, so that memory does not grow with the number of parts."""

import io

import duckdb
import polars as pl
import pytest

from export_pipelines.engine.request import Compression, CsvOptions, ExportFormat
from export_pipelines.engine.row_source import RowSource
from export_pipelines.engine.writer import SIZE_SAMPLE_ROWS, Sink, rows_per_file

READERS = {
    ExportFormat.CSV: pl.read_csv,
    ExportFormat.JSONL: pl.read_ndjson,
    ExportFormat.PARQUET: pl.read_parquet,
}


class Part(io.RawIOBase):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.data += memoryview(data).cast("B")
        return memoryview(data).nbytes


class Handle(io.RawIOBase):
    """What the writer gets for a part: it passes the bytes on, like the S3 objects' handles."""

    def __init__(self, part: Part) -> None:
        super().__init__()
        self.part = part

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        return self.part.write(data)


@pytest.mark.parametrize("export_format", list(READERS))
@pytest.mark.parametrize("rows", [100_000, 100_001])
@pytest.mark.parametrize("per_file", [10_000, 7_777])  # parts that end with a batch, and inside one
def test_parts_hold_exact_rows_and_each_is_written_before_the_next_begins(
    export_format: ExportFormat, rows: int, per_file: int
) -> None:
    # The rows stream from DuckDB as they do in an export, batch by batch.
    relation = duckdb.connect().sql(f"SELECT i AS id, repeat('x', 40) AS text FROM range({rows}) t(i)")
    parts = [Part() for _ in range(-(-rows // per_file))]
    opened: list[int] = []
    written: list[int] = []
    counted: list[int] = []

    def open_part(number: int) -> Handle:
        opened.append(number)
        return Handle(parts[number])

    def part_written(number: int) -> None:
        # Whole when heard (a Parquet file's footer included), and the next part not begun.
        assert opened == list(range(number + 1))
        ids = READERS[export_format](io.BytesIO(parts[number].data))["id"].to_list()
        assert ids == list(range(number * per_file, min(rows, (number + 1) * per_file)))
        written.append(number)

    with RowSource(relation, counted.append) as source, Sink(export_format, Compression.NONE, CsvOptions()) as sink:
        sink.parts(source, len(parts), per_file, open_part, part_written)
    assert written == list(range(len(parts)))
    assert counted == sorted(counted) and counted[-1] == rows  # a running total, batch by batch


@pytest.mark.parametrize(
    ("export_format", "compression"),
    [
        (ExportFormat.CSV, Compression.GZIP),
        (ExportFormat.JSONL, Compression.ZSTD),
        (ExportFormat.PARQUET, Compression.ZSTD),
        (ExportFormat.PARQUET, Compression.NONE),
    ],
)
def test_parts_come_to_about_max_bytes_as_stored(export_format: ExportFormat, compression: Compression) -> None:
    target = 5 * 2**20
    rows = 2_000_000
    relation = duckdb.connect().sql(
        f"SELECT i AS id, hash(i) % 100000 AS amount, 'customer ' || (hash(i) % 5000) AS customer, "
        f"TIMESTAMPTZ '2024-01-01' + to_seconds(i) AS created_at FROM range({rows}) t(i)"
    )
    with Sink(export_format, compression, CsvOptions()) as sink:
        with RowSource(relation.limit(SIZE_SAMPLE_ROWS)) as sample:
            per_file = rows_per_file(None, target, sample.frame(), SIZE_SAMPLE_ROWS, sink)
        assert per_file is not None
        parts = [Part() for _ in range(-(-rows // per_file))]
        with RowSource(relation) as source:
            sink.parts(source, len(parts), per_file, lambda number: Handle(parts[number]), lambda _number: None)
    sizes = [len(part.data) for part in parts]
    assert len(sizes) >= 3 and sum(READERS[export_format](io.BytesIO(p.data)).height for p in parts) == rows
    assert all(0.75 * target <= size <= 1.1 * target for size in sizes[:-1]), sizes
