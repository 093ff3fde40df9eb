"""Writes cut into buffers of a fixed size: the shape shared by the S3 upload (parts) and the
gzip compression (blocks)."""

import io
from typing import Any


class BlockFillingWriter(io.RawIOBase):
    """A write-only file that copies what is written into buffers, handing each on once full:
    `_next_buffer()` gives the buffer to fill (its length is the block's size), `_full(buffer)`
    takes it. The buffer being filled, if any, is `_buffer`, holding `_filled` bytes; `bytes`
    counts every byte written."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer: bytearray | None = None
        self._filled = 0
        self.bytes = 0

    def _next_buffer(self) -> bytearray:
        raise NotImplementedError

    def _full(self, buffer: bytearray) -> None:
        raise NotImplementedError

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = len(view)
        while view:
            if self._buffer is None:
                self._buffer, self._filled = self._next_buffer(), 0
            count = min(len(view), len(self._buffer) - self._filled)
            self._buffer[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == len(self._buffer):
                full, self._buffer = self._buffer, None
                self._full(full)
        self.bytes += written
        return written
