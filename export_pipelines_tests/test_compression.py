"""gzip and zstd compressed in blocks on several threads: the blocks come out in order as one
stream that every reader takes whole, at most one block per thread is held, and a failure stops
everything without writing what was pending."""

import gzip
import io
import random
import threading
import time

import polars as pl
import pytest
import zstandard

from export_pipelines.engine import compression
from export_pipelines.engine.compression import BLOCK_BYTES, BlockCompressor
from export_pipelines.engine.request import Compression
from export_pipelines_tests.compressed import streams_in

COMPRESSED = [Compression.GZIP, Compression.ZSTD]


def text(size: int) -> bytes:
    """CSV-like lines that compress like an export's (not a repeated pattern)."""
    rng = random.Random(7)
    lines, total = [], 0
    while total < size:
        line = f"{rng.randrange(10**9)},{rng.choice(['paid', 'refunded', 'failed'])},{rng.random():.6f}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def compress(data: bytes, kind: Compression, chunk: int, workers: int = 2) -> bytes:
    target = io.BytesIO()
    with BlockCompressor(target, kind, workers) as compressor:
        for start in range(0, len(data), chunk):
            compressor.write(data[start : start + chunk])
        compressor.finish()
    return target.getvalue()


def wait_until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", COMPRESSED)
def test_blocks_make_one_stream_that_readers_take_whole(kind: Compression) -> None:
    data = text(3 * BLOCK_BYTES + 12_345)
    compressed = compress(data, kind, chunk=1_000_003)  # writes that straddle the blocks

    assert [len(stream) for stream in streams_in(compressed, kind)] == [BLOCK_BYTES] * 3 + [12_345]
    if kind is Compression.GZIP:
        assert gzip.decompress(compressed) == data
    else:
        assert zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(compressed) == data
    # Polars reads the stream as one CSV file, DuckDB does in the export fidelity tests.
    columns = {"has_header": False, "new_columns": ["id", "status", "amount"]}
    assert pl.read_csv(compressed, **columns).equals(pl.read_csv(data, **columns))
    assert len(compressed) < len(data) / 2


@pytest.mark.parametrize("kind", COMPRESSED)
def test_an_empty_or_small_file_is_one_plain_stream(kind: Compression) -> None:
    assert streams_in(compress(b"id\n1\n", kind, chunk=2), kind) == [b"id\n1\n"]
    assert compress(b"", kind, chunk=1) == b""


def test_blocks_are_written_in_order_however_they_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    first_may_finish = threading.Event()

    def slow_first(block: bytearray) -> bytes:
        if block[:1] == b"a":
            assert first_may_finish.wait(10)
        return bytes(block[:1])

    monkeypatch.setitem(compression.COMPRESSORS, Compression.GZIP, slow_first)
    target = io.BytesIO()
    with BlockCompressor(target, Compression.GZIP, workers=3) as compressor:
        for letter in b"abc":
            compressor.write(bytes([letter]) * BLOCK_BYTES)
        time.sleep(0.2)  # b and c are done by now; nothing may be written before a
        assert target.getvalue() == b""
        first_may_finish.set()
        compressor.finish()
    assert target.getvalue() == b"abc"


def test_at_most_one_block_per_thread_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    go_on = threading.Event()

    def held(block: bytearray) -> bytes:
        started.append(block[0])
        assert go_on.wait(10)
        return bytes(block[:1])

    monkeypatch.setitem(compression.COMPRESSORS, Compression.ZSTD, held)
    target = io.BytesIO()
    compressor = BlockCompressor(target, Compression.ZSTD, workers=2)
    writer = threading.Thread(target=lambda: [compressor.write(bytes([n]) * BLOCK_BYTES) for n in range(6)])
    writer.start()
    wait_until(lambda: len(started) == 2, "two blocks being compressed")
    time.sleep(0.2)  # the writer is held: a third block is filled but not handed over
    assert writer.is_alive() and started == [0, 1]
    go_on.set()
    writer.join(10)
    compressor.finish()
    assert target.getvalue() == bytes(range(6))


def test_a_failure_stops_the_threads_and_writes_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(block: bytearray) -> bytes:
        if block[0] == 1:
            raise MemoryError("no room to compress")
        return bytes(block[:1])

    monkeypatch.setitem(compression.COMPRESSORS, Compression.GZIP, broken)
    target = io.BytesIO()
    compressor = BlockCompressor(target, Compression.GZIP, workers=1)
    with pytest.raises(MemoryError, match="no room to compress"):
        for n in range(4):
            compressor.write(bytes([n]) * BLOCK_BYTES)
        compressor.finish()
    compressor.close()
    assert target.getvalue() == b"\x00"
    assert compressor.closed
    with pytest.raises(RuntimeError, match="shutdown"):
        compressor._pool.submit(bytes)
