"""Uploads are checked against the hashes taken while writing, on the real S3 server."""

import hashlib
from pathlib import Path

import pytest

from export_pipelines.artifacts import IntegrityError, stored_sha256, upload_verified
from export_pipelines.local_s3 import LocalS3
from export_pipelines.writer import MULTIPART_THRESHOLD_BYTES, HashingWriter
from export_pipelines_tests.conftest import BUCKET


def written(path: Path, data: bytes, chunk: int = 1 << 20):
    writer = HashingWriter(path)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    return writer.artifact(rows=1)


@pytest.mark.parametrize("size", [0, 1_000, MULTIPART_THRESHOLD_BYTES + 5_000_000])
def test_upload_matches_hashes_single_and_multipart(s3_server: LocalS3, tmp_path: Path, size: int) -> None:
    data = hashlib.sha256(b"seed").digest() * (size // 32) + b"z" * (size % 32)
    artifact = written(tmp_path / "file.bin", data)
    assert artifact.sha256 == hashlib.sha256(data).hexdigest() and artifact.bytes == size
    key = f"integrity/{size}.bin"
    upload_verified(s3_server.client(), BUCKET, key, artifact)
    assert stored_sha256(s3_server.client(), BUCKET, key) == artifact.sha256
    assert artifact.expected_etag.endswith("-5") == (size > MULTIPART_THRESHOLD_BYTES)


def test_upload_of_other_bytes_is_detected(s3_server: LocalS3, tmp_path: Path) -> None:
    artifact = written(tmp_path / "file.bin", b"a" * 4096)
    (tmp_path / "file.bin").write_bytes(b"b" * 4096)  # same size, different bytes on the way
    with pytest.raises(IntegrityError, match="does not match the written bytes"):
        upload_verified(s3_server.client(), BUCKET, "integrity/tampered.bin", artifact)
