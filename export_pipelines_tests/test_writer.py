"""The writer's parts, in memory: exact row boundaries in every format, and files let go one
after the other as the rows stream in, so that memory does not grow with the number of parts."""

import io
import weakref

import duckdb
import polars as pl
import pytest

from export_pipelines.engine.request import Compression, CsvOptions, ExportFormat
from export_pipelines.engine.steps import _counted_frame
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
@pytest.mark.parametrize("rows", [1_000_000, 1_000_001])
def test_parts_hold_exact_rows_and_are_let_go_as_the_rows_stream(export_format: ExportFormat, rows: int) -> None:
    per_file = 10_000
    # The rows stream from DuckDB as they do in an export, batch by batch.
    relation = duckdb.connect().sql(f"SELECT i AS id, repeat('x', 40) AS text FROM range({rows}) t(i)")
    parts = [Part() for _ in range(-(-rows // per_file))]
    held: set[int] = set()
    most_held = 0

    def open_part(number: int) -> Handle:
        nonlocal most_held
        handle = Handle(parts[number])
        held.add(number)
        most_held = max(most_held, len(held))
        weakref.finalize(handle, held.discard, number)
        return handle

    Sink(export_format, Compression.NONE, CsvOptions()).parts(
        _counted_frame(relation, lambda _rows: None), len(parts), open_part, per_file
    )
    for number, part in enumerate(parts):
        ids = READERS[export_format](io.BytesIO(part.data))["id"].to_list()
        assert ids == list(range(number * per_file, min(rows, (number + 1) * per_file)))
    assert not held and most_held <= 16, most_held  # 100 parts, a few at a time


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
    sink = Sink(export_format, compression, CsvOptions())
    sample = _counted_frame(relation.limit(SIZE_SAMPLE_ROWS), lambda _rows: None)
    per_file = rows_per_file(None, target, sample, SIZE_SAMPLE_ROWS, sink)
    assert per_file is not None
    parts = [Part() for _ in range(-(-rows // per_file))]
    sink.parts(_counted_frame(relation, lambda _rows: None), len(parts), lambda number: Handle(parts[number]), per_file)
    sizes = [len(part.data) for part in parts]
    assert len(sizes) >= 3 and sum(READERS[export_format](io.BytesIO(p.data)).height for p in parts) == rows
    assert all(0.75 * target <= size <= 1.1 * target for size in sizes[:-1]), sizes
