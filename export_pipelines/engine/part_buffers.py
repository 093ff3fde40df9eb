"""The memory an export's uploads hold: a fixed number of part buffers, reused part after part."""

import threading


class PartBuffers:
    """At most `count` parts of an export wait in memory for S3.

    Writing fills a buffer taken from here and waits for one when all are taken: that wait is
    what holds an export that writes faster than S3 takes its bytes to `count` parts. A buffer
    comes back once its part is in S3 and is filled again, so memory stays at `count` parts for
    the whole export, with no full part copied and no freed 8 MiB block for the allocator to keep.
    """

    def __init__(self, count: int):
        self._slots = threading.Semaphore(count)
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        """A buffer of `size` bytes for the next part (waits while `count` parts are out)."""
        self._slots.acquire()
        with self._lock:
            buffer = self._free.pop() if self._free else None
        return buffer if buffer is not None and len(buffer) == size else bytearray(size)

    def recycle(self, buffer: bytearray) -> None:
        """`buffer` may be filled again; its part still counts until `release`."""
        with self._lock:
            self._free.append(buffer)

    def release(self) -> None:
        """A part taken is in S3 (or given up): another may be taken."""
        self._slots.release()
