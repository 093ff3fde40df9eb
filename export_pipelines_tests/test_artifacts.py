"""Streaming uploads on the real S3 server: single and multipart objects carry the SHA-256 of
the bytes written, S3 rejects a damaged part, a checksummed body is not hashed again to sign it,
a replaced object is detected, and an aborted upload leaves nothing."""

import base64
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from export_pipelines.deploy.local_s3 import LocalS3
from export_pipelines.engine import artifacts
from export_pipelines.engine.artifacts import (
    PART_BYTES,
    IntegrityError,
    S3UploadWriter,
    part_size,
    put_manifest,
    stored_sha256,
    unfinished_uploads,
    verify_uploaded,
)
from export_pipelines.engine.part_buffers import PartBuffers
from export_pipelines_tests.conftest import BUCKET, wait_for


def stream(s3: LocalS3, key: str, data: bytes, chunk: int = 1 << 20):
    with ThreadPoolExecutor(4) as pool:
        writer = S3UploadWriter(s3.client(), BUCKET, key, pool, PartBuffers(3))
        for start in range(0, len(data), chunk):
            writer.write(data[start : start + chunk])
        writer.close()
    return writer.uploaded(rows=1)


@pytest.mark.parametrize("size", [0, 1_000, PART_BYTES, 3 * PART_BYTES + 12_345])
def test_streamed_object_matches_the_written_bytes(s3_server: LocalS3, size: int) -> None:
    data = (hashlib.sha256(b"seed").digest() * (size // 32 + 1))[:size]
    artifact = stream(s3_server, f"integrity/{size}.bin", data)
    assert (artifact.bytes, artifact.sha256) == (size, hashlib.sha256(data).hexdigest())
    verify_uploaded(s3_server.client(), BUCKET, artifact)
    assert stored_sha256(s3_server.client(), BUCKET, artifact.key) == artifact.sha256
    assert artifact.expected_checksum.endswith("-4") == (size > 3 * PART_BYTES)


def test_damaged_object_is_detected(s3_server: LocalS3) -> None:
    artifact = stream(s3_server, "integrity/damaged.bin", b"a" * 4096)
    s3_server.client().put_object(Bucket=BUCKET, Key=artifact.key, Body=b"b" * 4096)
    with pytest.raises(IntegrityError, match="does not match the written bytes"):
        verify_uploaded(s3_server.client(), BUCKET, artifact)


def test_s3_rejects_a_part_that_does_not_match_its_checksum(s3_server: LocalS3, monkeypatch) -> None:
    client = s3_server.client()
    original = client.upload_part

    def damaged(**kwargs):
        return original(**{**kwargs, "Body": b"y" * len(kwargs["Body"])})

    monkeypatch.setattr(client, "upload_part", damaged)
    with ThreadPoolExecutor(2) as pool:
        writer = S3UploadWriter(client, BUCKET, "integrity/damaged-part.bin", pool, PartBuffers(2))
        writer.write(b"z" * (PART_BYTES + 10))
        with pytest.raises(Exception, match="BadDigest"):
            writer.close()
        writer.abort()
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix="integrity/damaged-part")


def payload_signatures(client, send: Callable[[], None]) -> list[tuple[str, str]]:
    """(operation, x-amz-content-sha256) of each request `send` makes with `client`."""
    sent = []

    def capture(request, event_name: str, **_) -> None:
        signature = request.headers["X-Amz-Content-SHA256"]
        sent.append((event_name.rsplit(".", 1)[-1], signature.decode() if isinstance(signature, bytes) else signature))

    client.meta.events.register("before-send.s3", capture)
    try:
        send()
    finally:
        client.meta.events.unregister("before-send.s3", capture)
    return sent


def test_a_body_sent_with_its_sha256_is_not_hashed_again_to_sign_it(s3_server: LocalS3) -> None:
    """Parts and whole objects carry their SHA-256 in a signed header, which binds the body (S3
    refuses a damaged part: the test above), so their payload goes unsigned rather than hashed a
    third time; a body without that checksum (the manifest) is still signed."""
    client = s3_server.client()
    manifest_key: list[str] = []

    def send() -> None:
        for name, data in (("multipart", b"m" * (PART_BYTES + 10)), ("single", b"s" * 10)):
            verify_uploaded(client, BUCKET, stream(s3_server, f"signing/{name}.bin", data))
        manifest_key.append(put_manifest(client, BUCKET, "signing/", {"files": []}))

    sent = [
        (operation, signature) for operation, signature in payload_signatures(client, send) if operation != "HeadObject"
    ]
    assert [operation for operation, _ in sent] == [
        "CreateMultipartUpload", "UploadPart", "UploadPart", "CompleteMultipartUpload", "PutObject", "PutObject"
    ]  # fmt: skip
    assert [signature == "UNSIGNED-PAYLOAD" for _, signature in sent] == [False, True, True, False, True, False]
    manifest = client.get_object(Bucket=BUCKET, Key=manifest_key[0])["Body"].read()
    assert sent[-1][1] == hashlib.sha256(manifest).hexdigest()


def test_over_https_a_checksummed_body_goes_unsigned_too() -> None:
    """botocore leaves a payload unsigned over HTTPS only for a checksum it computes itself; the
    parts of an export carry their own, so it would sign (hash) every part again on AWS S3."""
    client = artifacts.ExportS3Resource(
        endpoint_url="https://s3.example.invalid", aws_access_key_id="key", aws_secret_access_key="secret"
    ).get_client()
    body = b"part" * 1000
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()

    class NotSent(Exception):
        pass

    def stop(**_) -> None:
        raise NotSent

    def send() -> None:
        client.meta.events.register("before-send.s3", stop)  # after the capture: nothing leaves
        try:
            for put in (
                lambda: client.upload_part(
                    Bucket=BUCKET, Key="k", UploadId="u", PartNumber=1, Body=body, ChecksumSHA256=checksum
                ),
                lambda: client.put_object(Bucket=BUCKET, Key="k", Body=body, ChecksumSHA256=checksum),
            ):
                with pytest.raises(NotSent):
                    put()
        finally:
            client.meta.events.unregister("before-send.s3", stop)

    assert payload_signatures(client, send) == [("UploadPart", "UNSIGNED-PAYLOAD"), ("PutObject", "UNSIGNED-PAYLOAD")]


def test_aborted_multipart_upload_leaves_nothing(s3_server: LocalS3) -> None:
    client = s3_server.client()
    with ThreadPoolExecutor(2) as pool:
        writer = S3UploadWriter(client, BUCKET, "integrity/aborted.bin", pool, PartBuffers(2))
        writer.write(b"z" * (2 * PART_BYTES + 10))
        writer.abort()
    assert "Contents" not in client.list_objects_v2(Bucket=BUCKET, Prefix="integrity/aborted")
    assert unfinished_uploads(client, BUCKET, "integrity/aborted") == []


def test_parts_grow_so_that_any_object_fits_in_10000_parts(s3_server: LocalS3, monkeypatch) -> None:
    assert [part_size(i) // PART_BYTES for i in (0, 999, 1000, 2000, 9999)] == [1, 1, 2, 4, 512]
    assert part_size(9999) <= 5 * 2**30  # S3's largest part
    assert sum(part_size(i) for i in range(10_000)) >= 5 * 2**40  # S3's largest object
    # The same schedule on a small scale: 5 MiB parts doubling after every 2 parts.
    monkeypatch.setattr(artifacts, "PART_BYTES", 5 * 2**20)
    monkeypatch.setattr(artifacts, "PARTS_PER_SIZE", 2)
    size = (5 + 5 + 10 + 10 + 20) * 2**20 + 1
    data = (hashlib.sha256(b"grow").digest() * (size // 32 + 1))[:size]
    artifact = stream(s3_server, "integrity/growing.bin", data, chunk=3 << 20)
    assert artifact.expected_checksum.endswith("-6")  # 8 MiB parts would have made 11
    verify_uploaded(s3_server.client(), BUCKET, artifact)
    assert stored_sha256(s3_server.client(), BUCKET, artifact.key) == hashlib.sha256(data).hexdigest()


def test_writing_waits_for_s3_within_its_part_buffers_and_reuses_them(s3_server: LocalS3, monkeypatch) -> None:
    """With buffers for 2 parts, writing stops after 2 parts while S3 has not taken them, goes on
    as they land, and fills the same 2 buffers part after part; the object is whole."""
    client = s3_server.client()
    original, s3_takes = client.upload_part, threading.Event()

    def held(**kwargs):
        assert s3_takes.wait(timeout=120)
        return original(**kwargs)

    monkeypatch.setattr(client, "upload_part", held)
    buffers, taken, asked = PartBuffers(2), [], []
    take = buffers.take

    def recorded_take(size: int) -> bytearray:
        asked.append(size)
        taken.append(take(size))
        return taken[-1]

    monkeypatch.setattr(buffers, "take", recorded_take)
    data = (hashlib.sha256(b"held").digest() * (6 * PART_BYTES // 32 + 4))[: 6 * PART_BYTES + 100]
    with ThreadPoolExecutor(4) as pool:
        writer = S3UploadWriter(client, BUCKET, "integrity/held.bin", pool, buffers)
        chunks = [data[start : start + (1 << 20)] for start in range(0, len(data), 1 << 20)]
        writing = threading.Thread(target=lambda: [writer.write(chunk) for chunk in chunks])
        writing.start()
        wait_for(lambda: len(asked) == 3, "the third part's buffer asked for")
        assert writer.bytes == 2 * PART_BYTES  # waits for S3 to take a part before it writes on
        s3_takes.set()
        writing.join(timeout=120)
        assert not writing.is_alive()
        writer.close()
    artifact = writer.uploaded(rows=1)
    assert (artifact.bytes, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    verify_uploaded(client, BUCKET, artifact)
    assert len(taken) == 7 and len({id(buffer) for buffer in taken}) == 2  # 6 parts and the tail, in 2 buffers


def test_objects_written_one_after_another_fill_the_same_part_buffers(s3_server: LocalS3, monkeypatch) -> None:
    """The objects of a split, each ending in a partial part, go through the same buffers: memory
    does not grow with the number of objects."""
    client, buffers, taken = s3_server.client(), PartBuffers(2), []
    take = buffers.take
    monkeypatch.setattr(buffers, "take", lambda size: taken.append(take(size)) or taken[-1])  # keeps them alive
    data = (hashlib.sha256(b"split").digest() * (PART_BYTES // 32 + 100))[: PART_BYTES + 1_000]
    with ThreadPoolExecutor(2) as pool:
        for number in range(5):
            writer = S3UploadWriter(client, BUCKET, f"integrity/split-{number}.bin", pool, buffers)
            writer.write(data)
            writer.close()
            verify_uploaded(client, BUCKET, writer.uploaded(rows=1))
    assert len(taken) == 10 and len({id(buffer) for buffer in taken}) == 2


def test_an_export_sends_as_many_parts_at_once_as_its_s3_resource_allows(export_env, monkeypatch) -> None:
    """`parts_in_flight=2`: while S3 has taken neither of two parts, writing waits (no third part is
    sent); an uncompressed export of 4 parts arrives whole."""
    s3 = artifacts.ExportS3Resource(parts_in_flight=2)
    client = s3.get_client()  # the run's resource gets the same: one client per process and settings
    original, lock, in_flight, most = client.upload_part, threading.Condition(), [0], [0]

    def counted(**kwargs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            lock.notify_all()
            assert lock.wait_for(lambda: most[0] >= 2, timeout=60), "a second part was never sent"
        try:
            return original(**kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(client, "upload_part", counted)
    result = export_env.run({"source": {"table": "payment.charges"}, "format": "JSONL"}, s3=s3)
    record = export_env.record(result)
    assert record["status"] == "SUCCEEDED" and record["row_count"] == 100_000
    assert record["bytes"] > 3 * PART_BYTES and most[0] == 2
    [file] = record["files"]
    assert stored_sha256(client, BUCKET, file["key"]) == file["sha256"]


def test_parts_in_flight_is_checked_where_it_is_set(monkeypatch) -> None:
    assert artifacts.ExportS3Resource().resolved_parts_in_flight == 3
    for wrong in (0, 65):
        with pytest.raises(ValueError, match=f"parts_in_flight must be 1 to 64 parts, got {wrong}"):
            artifacts.ExportS3Resource(parts_in_flight=wrong)
    monkeypatch.setenv("EXPORTS_S3_PARTS_IN_FLIGHT", "2")
    assert artifacts.ExportS3Resource().resolved_parts_in_flight == 2
    monkeypatch.setenv("EXPORTS_S3_PARTS_IN_FLIGHT", "0")
    with pytest.raises(ValueError, match="EXPORTS_S3_PARTS_IN_FLIGHT must be 1 to 64 parts, got 0"):
        _ = artifacts.ExportS3Resource().resolved_parts_in_flight
    monkeypatch.setenv("EXPORTS_S3_PARTS_IN_FLIGHT", "many")
    with pytest.raises(ValueError, match="EXPORTS_S3_PARTS_IN_FLIGHT must be a whole number, got 'many'"):
        _ = artifacts.ExportS3Resource().resolved_parts_in_flight
