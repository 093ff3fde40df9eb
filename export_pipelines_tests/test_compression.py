"""gzip and zstd compressed on several threads: each file is still one gzip member or one zstd
frame that the strictest readers take whole, gzip's blocks come out in order, at most one block
per thread is held, the files of an export share the same threads and buffers, and a failure
writes nothing of what was pending."""

import contextlib
import gzip
import io
import random
import subprocess
import threading
import time
import zlib

import polars as pl
import pytest
import zstandard

from export_pipelines.engine import compression
from export_pipelines.engine.compression import BLOCK_BYTES, Compressor
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


def compress(data: bytes, kind: Compression, chunk: int, compressor: Compressor | None = None) -> bytes:
    """`data` compressed as one file, written `chunk` bytes at a time (by `compressor`, or a new one)."""
    target = io.BytesIO()
    owned = Compressor(kind) if compressor is None else contextlib.nullcontext(compressor)
    with owned as used, used.writer(target) as writer:
        for start in range(0, len(data), chunk):
            writer.write(data[start : start + chunk])
        writer.finish()
    return target.getvalue()


def wait_until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", COMPRESSED)
def test_a_file_is_one_stream_that_the_strictest_readers_take_whole(kind: Compression) -> None:
    data = text(5 * BLOCK_BYTES + 12_345)
    stored = compress(data, kind, chunk=1_000_003)  # writes that straddle the blocks

    assert streams_in(stored, kind) == [data]  # one member or frame, not one per block
    if kind is Compression.GZIP:
        assert zlib.decompress(stored, 31) == gzip.decompress(stored) == data  # zlib stops after one member
        whole = zlib.compressobj(compression.GZIP_LEVEL, zlib.DEFLATED, 31)
        assert len(stored) <= 1.01 * len(whole.compress(data) + whole.flush())  # the dictionaries keep the ratio
    else:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data
    tool = "gzip" if kind is Compression.GZIP else "zstd"
    assert subprocess.run([tool, "-dc"], input=stored, capture_output=True, check=True).stdout == data
    columns = {"has_header": False, "new_columns": ["id", "status", "amount"]}
    assert pl.read_csv(stored, **columns).equals(pl.read_csv(data, **columns))


@pytest.mark.parametrize("kind", COMPRESSED)
def test_an_empty_or_small_file_is_a_plain_stream(kind: Compression) -> None:
    assert streams_in(compress(b"id\n1\n", kind, chunk=2), kind) == [b"id\n1\n"]
    assert streams_in(compress(b"", kind, chunk=1), kind) == [b""]


def test_gzip_blocks_are_written_in_order_however_they_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    first_may_finish = threading.Event()

    def slow_first(block: memoryview, _dictionary: bytes) -> tuple[bytes, int]:
        if block[:1] == b"a":
            assert first_may_finish.wait(10)
        return bytes(block[:1]), 0

    monkeypatch.setattr(compression, "_deflate", slow_first)
    target = io.BytesIO()
    with Compressor(Compression.GZIP, workers=3) as compressor, compressor.writer(target) as writer:
        for letter in b"abc":
            writer.write(bytes([letter]) * BLOCK_BYTES)
        time.sleep(0.2)  # b and c are done by now; nothing but the header may be written before a
        assert target.getvalue() == compression.GZIP_HEADER
        first_may_finish.set()
        writer.finish()
    assert target.getvalue()[len(compression.GZIP_HEADER) :].startswith(b"abc")


def test_each_gzip_block_gets_the_text_before_it_as_its_dictionary(monkeypatch: pytest.MonkeyPatch) -> None:
    dictionaries: list[bytes] = []

    def recorded(block: memoryview, dictionary: bytes) -> tuple[bytes, int]:
        dictionaries.append(dictionary)
        return b"", 0

    monkeypatch.setattr(compression, "_deflate", recorded)
    data = text(3 * BLOCK_BYTES)
    with Compressor(Compression.GZIP, workers=1) as compressor, compressor.writer(io.BytesIO()) as writer:
        writer.write(data)
        writer.finish()
    before = [data[end - compression.DEFLATE_WINDOW : end] for end in (BLOCK_BYTES, 2 * BLOCK_BYTES)]
    assert dictionaries == [b"", *before]


def test_at_most_one_gzip_block_per_thread_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    go_on = threading.Event()

    def held(block: memoryview, _dictionary: bytes) -> tuple[bytes, int]:
        started.append(block[0])
        assert go_on.wait(10)
        return bytes(block[:1]), 0

    monkeypatch.setattr(compression, "_deflate", held)
    target = io.BytesIO()
    compressor = Compressor(Compression.GZIP, workers=2)
    writer = compressor.writer(target)
    filling = threading.Thread(target=lambda: [writer.write(bytes([n]) * BLOCK_BYTES) for n in range(6)])
    filling.start()
    wait_until(lambda: len(started) == 2, "two blocks being deflated")
    time.sleep(0.2)  # the writer is held: a third block is filled but not handed over
    assert filling.is_alive() and started == [0, 1]
    go_on.set()
    filling.join(10)
    writer.finish()
    compressor.close()
    assert target.getvalue()[len(compression.GZIP_HEADER) :].startswith(bytes(range(6)))


def test_a_gzip_failure_writes_nothing_more_and_the_threads_stop_with_the_compressor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(block: memoryview, _dictionary: bytes) -> tuple[bytes, int]:
        if block[0] == 1:
            raise MemoryError("no room to compress")
        return bytes(block[:1]), 0

    monkeypatch.setattr(compression, "_deflate", broken)
    target = io.BytesIO()
    compressor = Compressor(Compression.GZIP, workers=1)
    writer = compressor.writer(target)
    with pytest.raises(MemoryError, match="no room to compress"):
        for n in range(4):
            writer.write(bytes([n]) * BLOCK_BYTES)
        writer.finish()
    writer.close()
    assert target.getvalue() == compression.GZIP_HEADER + b"\x00"
    compressor.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        compressor.writer(io.BytesIO()).write(bytes(BLOCK_BYTES))


@pytest.mark.parametrize("kind", COMPRESSED)
def test_the_files_of_an_export_share_threads_and_buffers(kind: Compression) -> None:
    files = [text(2 * BLOCK_BYTES + size) for size in (1, 700_000, 1_500_000)]
    with Compressor(kind, workers=2) as compressor:
        stored = [compress(data, kind, chunk=999_999, compressor=compressor) for data in files]
        buffers = {id(buffer) for buffer in compressor._buffers} if kind is Compression.GZIP else set()
        assert len(buffers) <= 3  # one block per thread and the one being filled, made once
    assert [streams_in(data, kind) for data in stored] == [[data] for data in files]


def test_a_zstd_file_closed_unfinished_is_left_without_its_end() -> None:
    target = io.BytesIO()
    with Compressor(Compression.ZSTD) as compressor, compressor.writer(target) as writer:
        writer.write(text(3 * BLOCK_BYTES))
    reading = zstandard.ZstdDecompressor().decompressobj()
    reading.decompress(target.getvalue())
    assert not reading.eof and not target.closed
