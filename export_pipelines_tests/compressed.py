"""Reading compressed artifacts back the hard way: stream by stream."""

import zlib

import zstandard

from export_pipelines.engine.request import Compression


def streams_in(data: bytes, kind: Compression) -> list[bytes]:
    """The gzip members or zstd frames of `data`, each decompressed on its own."""
    streams = []
    while data:
        if kind is Compression.GZIP:
            decompressor = zlib.decompressobj(31)  # 31: gzip
        else:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
        streams.append(decompressor.decompress(data))
        data = decompressor.unused_data
    return streams
