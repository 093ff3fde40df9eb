"""gzip and zstd on every core: text cut into blocks, each block compressed on its own into a
gzip member or a zstd frame, the results written in order.

A gzip file may hold several members and a zstd file several frames, read back as one stream by
every reader (Python's gzip, DuckDB, Polars, zcat, zstd -d). Parquet compresses inside its pages
instead, so only CSV and JSONL are compressed here.
"""

import io
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import zstandard
from zlib_ng import zlib_ng

from export_pipelines.engine.request import Compression

# Blocks of 2 MiB: writing 1M rows on 2 cores was as fast as with 4 MiB blocks (which held 6 MiB
# more) and 10% faster than with 1 MiB. A member or frame begins every block; the history lost at
# each start costs under 0.5% of the size.
BLOCK_BYTES = 2 * 1024 * 1024
GZIP_LEVEL = 6  # zlib's and Polars' default
ZSTD_LEVEL = 3  # zstd's and Polars' default
GZIP_FORMAT = 31  # zlib's wbits for a gzip header and trailer around the deflate stream


def _gzip_member(block: memoryview) -> bytes:
    compressor = zlib_ng.compressobj(GZIP_LEVEL, zlib_ng.DEFLATED, GZIP_FORMAT)
    return compressor.compress(block) + compressor.flush()


_zstd = threading.local()  # a compressor per thread: each holds megabytes of tables, made once


def _zstd_frame(block: memoryview) -> bytes:
    if not hasattr(_zstd, "compressor"):
        _zstd.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return _zstd.compressor.compress(block)


COMPRESSORS: dict[Compression, Callable[[memoryview], bytes]] = {
    Compression.GZIP: _gzip_member,
    Compression.ZSTD: _zstd_frame,
}


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


class BlockCompressor(io.RawIOBase):
    """A write-only file that compresses what is written to it into `target`, a block of
    BLOCK_BYTES at a time on `workers` threads (zlib-ng and zstd let go of the GIL while they
    work): at most `workers` blocks are compressed at once, each written to `target` as soon as it
    and the blocks before it are done. The block buffers (`workers` + 1) are made once and filled
    again, so that no freed block is left to the allocator of a thread. `finish()` writes the
    rest; closing without it drops what is still pending (a failed write); `target` is never
    closed here.
    """

    def __init__(self, target: IO[bytes], compression: Compression, workers: int | None = None):
        super().__init__()
        self._target, self._compress = target, COMPRESSORS[compression]
        self._workers = workers or available_cores()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="compress")
        self._pending: deque[tuple[Future[bytes], bytearray]] = deque()  # in order, with their buffers
        self._free: list[bytearray] = []
        self._block, self._filled = bytearray(BLOCK_BYTES), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            count = min(len(view), BLOCK_BYTES - self._filled)
            self._block[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == BLOCK_BYTES:
                self._submit()
        return written

    def _submit(self) -> None:
        block = self._block
        self._pending.append((self._pool.submit(self._compress, memoryview(block)[: self._filled]), block))
        self._write_done(most_pending=self._workers)
        self._block, self._filled = self._free.pop() if self._free else bytearray(BLOCK_BYTES), 0

    def _write_done(self, most_pending: int) -> None:
        """Write the compressed blocks that are done, in order, and wait for more until at most
        `most_pending` are left."""
        while self._pending and (len(self._pending) > most_pending or self._pending[0][0].done()):
            future, block = self._pending.popleft()
            self._target.write(future.result())
            self._free.append(block)

    def finish(self) -> None:
        """Compress and write what is left, then close."""
        if self._filled:
            self._submit()
        self._write_done(most_pending=0)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pending.clear()
            self._free.clear()
        super().close()
