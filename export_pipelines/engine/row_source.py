"""The rows of a DuckDB relation as Polars lazy frames, read once from one DuckDB reader and
taken a part at a time: each part's frame goes on where the previous part's stopped."""

from collections.abc import Callable, Iterator
from types import TracebackType

import duckdb
import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source

DUCKDB_OUT_OF_MEMORY = "Out of Memory Error"


class RowSource:
    """The rows of `relation` in the batches the writer pulls, counted (`on_rows` hears the running
    total each time a batch is read, so the count runs at most a few batches ahead of the bytes
    written) and each passed through `per_batch`.

    Per-batch work belongs here, not in the lazy frame: as a stage of the frame (`map_batches`,
    or even `with_columns`) it lets the source run ahead of a slow sink and buffer the rows (a
    gzip export held 200 MiB more per million rows). Use as a context manager: the reader keeps
    the connection busy until it is closed."""

    def __init__(
        self,
        relation: duckdb.DuckDBPyRelation,
        on_rows: Callable[[int], None] = lambda _rows: None,
        per_batch: Callable[[pl.DataFrame], pl.DataFrame] = lambda batch: batch,
    ):
        self._relation, self._on_rows, self._per_batch = relation, on_rows, per_batch
        self.schema = per_batch(pl.DataFrame(schema=relation.pl(lazy=True).collect_schema())).schema
        self._reader: pa.RecordBatchReader | None = None  # opened by the first frame pulled
        self._rest: pl.DataFrame | None = None  # what a part's last batch held beyond the part
        self._read = 0

    def frame(self, rows: int | None = None) -> pl.LazyFrame:
        """A lazy frame of the next `rows` rows (None: all the rest), to be sunk once."""

        def batches(
            with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, batch_size: int | None
        ) -> Iterator[pl.DataFrame]:
            limits = [limit for limit in (rows, n_rows) if limit is not None]  # n_rows: Polars' own head
            wanted = min(limits) if limits else None
            for batch in self._take(wanted, batch_size):
                batch = batch.select(with_columns) if with_columns else batch
                yield batch if predicate is None else batch.filter(predicate)

        return register_io_source(batches, schema=self.schema)

    def _take(self, wanted: int | None, batch_size: int | None) -> Iterator[pl.DataFrame]:
        taken = 0
        while wanted is None or taken < wanted:
            batch = self._rest if self._rest is not None else self._next(batch_size)
            self._rest = None
            if batch is None:
                return
            if wanted is not None and taken + batch.height > wanted:
                batch, self._rest = batch.head(wanted - taken), batch.slice(wanted - taken)
            taken += batch.height
            yield batch

    def _next(self, batch_size: int | None) -> pl.DataFrame | None:
        if self._reader is None:
            relation = self._relation
            self._reader = relation.to_arrow_reader(batch_size) if batch_size else relation.to_arrow_reader()
        try:
            arrow = self._reader.read_next_batch()
        except StopIteration:
            return None
        except OSError as error:  # pyarrow passes DuckDB's errors on as OSError: give this one its own type
            if str(error).startswith(DUCKDB_OUT_OF_MEMORY):
                raise duckdb.OutOfMemoryException(str(error)) from error
            raise
        self._read += arrow.num_rows
        self._on_rows(self._read)
        frame = pl.from_arrow(arrow)
        assert isinstance(frame, pl.DataFrame)
        return self._per_batch(frame)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> "RowSource":
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
