"""Export artifacts in S3: the key layout, verified uploads, the manifest and clean-up.

Layout (SPEC): `<prefix><project_id>/<export_id>/<name>-<part>.<ext>[.gz|.zst]`, then
`manifest.json`, written last: an export without a manifest is not finished.
"""

import base64
import functools
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr, field_validator

from export_pipelines.engine.block_filling import BlockFillingWriter
from export_pipelines.engine.part_buffers import PartBuffers
from export_pipelines.engine.request import InvalidRequest
from export_pipelines.settings import env, int_env, optional_env

MANIFEST_NAME = "manifest.json"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Objects of one part or less are put whole; larger ones go up in parts while they are written:
# PART_BYTES each (S3's minimum is 5 MiB), doubling after every PARTS_PER_SIZE parts.
PART_BYTES = 8 * 1024 * 1024
PARTS_PER_SIZE = 1000
MAX_PARTS_IN_FLIGHT = 64  # 512 MiB of parts


class ExportS3Resource(S3Resource):
    """S3 (or an S3-compatible server) where artifacts go. Credentials come from the standard
    AWS environment variables, never from run config."""

    bucket: str | None = Field(
        default=None, description="Bucket of the artifacts. Default: $EXPORTS_BUCKET, else exports."
    )
    prefix: str | None = Field(
        default=None, description="Key prefix of every export. Default: $EXPORTS_PREFIX, else empty."
    )
    parts_in_flight: int | None = Field(
        default=None,
        description=f"Parts of an export (8 MiB each below 8 GB) held in memory for S3 at most, uploaded on as many "
        f"threads while writing goes on: each costs a part of memory; more carry a distant S3's bandwidth through its "
        f"latency. 1 to {MAX_PARTS_IN_FLIGHT}. Default: $EXPORTS_S3_PARTS_IN_FLIGHT, else 3.",
    )

    _client: Any = PrivateAttr(default=None)

    @property
    def resolved_bucket(self) -> str:
        return self.bucket or env("EXPORTS_BUCKET")

    @property
    def resolved_prefix(self) -> str:
        return self.prefix if self.prefix is not None else env("EXPORTS_PREFIX")

    @field_validator("parts_in_flight")
    @classmethod
    def _check_parts_in_flight(cls, value: int | None) -> int | None:
        return value if value is None else _parts_in_flight(value, "parts_in_flight")

    @property
    def resolved_parts_in_flight(self) -> int:
        if self.parts_in_flight is not None:
            return self.parts_in_flight
        return _parts_in_flight(int_env("EXPORTS_S3_PARTS_IN_FLIGHT"), "EXPORTS_S3_PARTS_IN_FLIGHT")

    def get_object_to_set_on_execution_context(self) -> Any:
        # Hooks and legacy contexts get this resource itself (bucket and prefix included).
        return self

    def get_client(self) -> Any:
        """The S3 client. boto3 clients are thread-safe and slow to build (0.1-0.3 s, a sixth of a
        small export): one is kept per process and settings, which a warm run worker reuses."""
        if self._client is None:
            endpoint_url = self.endpoint_url or optional_env("EXPORTS_S3_ENDPOINT_URL")
            region = self.region_name or optional_env("AWS_REGION") or "us-east-1"
            credentials = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}  # boto3 reads them
            self._client = _client_for(
                endpoint_url,
                region,
                tuple(sorted(credentials.items())),
                tuple(self.model_dump(include=_CLIENT_FIELDS).items()),
            )
        return self._client


def _parts_in_flight(value: int, name: str) -> int:
    if not 1 <= value <= MAX_PARTS_IN_FLIGHT:
        raise ValueError(f"{name} must be 1 to {MAX_PARTS_IN_FLIGHT} parts, got {value}")
    return value


_CLIENT_FIELDS = {
    "profile_name", "use_ssl", "verify", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "max_attempts",
}  # fmt: skip


@functools.cache
def _client_for(endpoint_url: str | None, region: str, _environment: tuple, fields: tuple[tuple[str, Any], ...]) -> Any:
    """One S3 client per process for each endpoint, region, credentials and resource settings."""
    import boto3

    settings = dict(fields)
    session = boto3.session.Session(profile_name=settings["profile_name"])
    client = session.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        use_ssl=settings["use_ssl"],
        verify=settings["verify"],
        aws_access_key_id=settings["aws_access_key_id"],
        aws_secret_access_key=settings["aws_secret_access_key"],
        aws_session_token=settings["aws_session_token"],
        config=Config(
            retries={"max_attempts": settings["max_attempts"], "mode": "standard"},
            # S3-compatible servers have had bugs with boto's default request checksums;
            # integrity is checked against our own hashes instead.
            request_checksum_calculation="when_required" if endpoint_url else "when_supported",
            response_checksum_validation="when_required" if endpoint_url else "when_supported",
        ),
    )
    for operation in ("UploadPart", "PutObject"):
        client.meta.events.register(f"before-sign.s3.{operation}", _leave_checksummed_payload_unsigned)
    return client


def _leave_checksummed_payload_unsigned(request: Any, **_: Any) -> None:
    """Sign a body that carries its SHA-256 checksum as UNSIGNED-PAYLOAD: the signed
    x-amz-checksum-sha256 header already binds it (S3 refuses a body that does not match), and
    signing the payload would hash every byte once more. botocore leaves a payload unsigned by
    itself only over HTTPS and for a checksum it computes; ours are taken as the bytes are written,
    so without this every part was hashed three times (the file's hash, the part's, the signature's)."""
    if "x-amz-checksum-sha256" in request.headers:
        config = request.context["client_config"]
        unsigned = Config(s3={**(config.s3 or {}), "payload_signing_enabled": False})
        request.context["client_config"] = config.merge(unsigned)


def check_key_segment(label: str, value: str) -> None:
    """Project and export ids become S3 key segments: keep them plain."""
    if not _SAFE_SEGMENT.match(value):
        raise InvalidRequest(
            f"{label} {value!r} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def export_key_prefix(prefix: str, project_id: str, export_id: str) -> str:
    return f"{prefix}{project_id}/{export_id}/"


class IntegrityError(RuntimeError):
    """The bytes in S3 are not the bytes that were written."""


class StorageUnavailable(RuntimeError):
    """S3 stayed unreachable (or failing on its side) for longer than a write waits."""


class WritingStopped(RuntimeError):
    """Whoever runs the export asked it to stop (a cancelled run) while its files were written."""


@dataclass(frozen=True)
class UploadedArtifact:
    """An object written to S3, with the hashes taken from the bytes as they were written."""

    key: str
    rows: int
    bytes: int
    sha256: str
    expected_checksum: str  # S3's ChecksumSHA256: of the object, or of the part digests and "-N"

    def manifest_entry(self) -> dict[str, Any]:
        return {"key": self.key, "bytes": self.bytes, "rows": self.rows, "sha256": self.sha256}


def part_size(index: int) -> int:
    """Bytes of the multipart upload's part `index` (from 0). S3 takes at most 10,000 parts of at
    most 5 GiB: 8 MiB parts doubling after every 1,000 (at most 4 GiB) hold any object up to S3's
    5 TiB limit, while the parts of an object under 8 GB stay at 8 MiB."""
    return PART_BYTES << min(index // PARTS_PER_SIZE, 9)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3UploadWriter(BlockFillingWriter):
    """A write-only file that streams into one S3 object while it is written.

    Bytes go into a part buffer taken from the export's `PartBuffers`; every full part goes to a
    multipart upload on a background thread with its SHA-256, which S3 checks on receipt, so
    uploading overlaps writing and memory stays bounded. The hashes (the part's, and in order
    the whole object's) are computed on a thread of its own, so the thread Polars writes from only
    copies bytes. An object smaller than one part is put whole when the file closes.

    A part is sent again through an outage of S3 for up to PATIENCE_SECONDS: botocore's own retries
    share one quota per client, which the parallel parts drain in the first seconds of an outage.
    """

    PATIENCE_SECONDS = 60.0

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        pool: ThreadPoolExecutor,
        buffers: PartBuffers,
        should_stop: Callable[[], bool] = lambda: False,
    ):
        super().__init__()
        self.client, self.bucket, self.key = client, bucket, key
        self._should_stop = should_stop
        self._pool, self._buffers = pool, buffers
        self._sha256 = hashlib.sha256()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self._parts: list[Future] = []
        self._part_digests: list[bytes] = []
        self._upload_id: str | None = None
        self.finished = False

    def _next_buffer(self) -> bytearray:
        return self._buffers.take(part_size(len(self._parts)))

    def _full(self, buffer: bytearray) -> None:
        self._send_part(buffer, buffer)

    def _send_part(self, body: bytes | bytearray, buffer: bytearray | None) -> None:
        """Upload `body` as the next part; `buffer`, the part buffer holding it if any, is
        recycled once the part is in S3. The part's place in `PartBuffers` is given back then, or
        at once if it is not sent."""
        try:
            if self._should_stop():  # asked once per part: a cancelled export stops within one part
                raise WritingStopped(f"writing s3://{self.bucket}/{self.key} was stopped")
            if self._upload_id is None:
                self._upload_id = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ChecksumAlgorithm="SHA256"
                )["UploadId"]
            hashed = self._hasher.submit(self._hash_part, body)
            future = self._pool.submit(self._upload_part, len(self._parts) + 1, body, hashed)
        except BaseException:
            self._buffers.release()
            raise
        future.add_done_callback(lambda _: self._part_sent(buffer))
        self._parts.append(future)

    def _hash_part(self, body: bytes | bytearray) -> bytes:
        self._sha256.update(body)
        return hashlib.sha256(body).digest()

    def _part_sent(self, buffer: bytearray | None) -> None:
        if buffer is not None:
            self._buffers.recycle(buffer)
        self._buffers.release()

    def _upload_part(self, number: int, body: bytes | bytearray, hashed: Future) -> tuple[dict[str, Any], bytes]:
        digest = hashed.result()  # the buffer is reused once uploaded: hashed before then
        deadline, pause = time.monotonic() + self.PATIENCE_SECONDS, 0.5
        while True:
            try:
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumSHA256=_b64(digest),
                )
                break
            except (ClientError, BotoConnectionError, HTTPClientError) as error:
                if not _transient(error) or self._should_stop():
                    raise
                if time.monotonic() + pause > deadline:
                    raise StorageUnavailable(
                        f"S3 did not take part {number} of s3://{self.bucket}/{self.key} through "
                        f"{self.PATIENCE_SECONDS:.0f} s of retries: {error}"
                    ) from error
                time.sleep(pause)
                pause = min(2 * pause, 8.0)
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": _b64(digest)}, digest

    def close(self) -> None:
        """Flush the last bytes and complete the object (the first close only)."""
        if self.closed:
            return
        try:
            # The last, partial part is copied out so that its buffer is filled again by the next
            # object. Sent from its buffer cut to its bytes instead, it saved the copy (5-8 MiB at
            # an export's very end) but every object took a new buffer: a 20M-row export in 20
            # objects grew 27 MiB more.
            tail = b"" if self._buffer is None else bytes(memoryview(self._buffer)[: self._filled])
            if self._buffer is not None:
                self._buffers.recycle(self._buffer)
                self._buffer = None
            if self._upload_id is None:
                self._sha256.update(tail)
                try:
                    self.client.put_object(
                        Bucket=self.bucket, Key=self.key, Body=tail, ChecksumSHA256=_b64(self._sha256.digest())
                    )
                finally:
                    if tail:
                        self._buffers.release()
            else:
                if tail:
                    self._send_part(tail, None)
                results = [future.result() for future in self._parts]
                self._part_digests = [digest for _, digest in results]
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": [part for part, _ in results]},
                )
            self.finished = True
        finally:
            self._hasher.shutdown()
            super().close()

    def abort(self) -> None:
        """Give up: nothing of this object stays in S3."""
        for future in self._parts:
            future.cancel()
        wait(self._parts)
        self._hasher.shutdown(cancel_futures=True)
        if self._buffer is not None:  # taken, not yet full
            self._buffers.release()
            self._buffer = None
        if self._upload_id is not None and not self.finished:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
        super().close()

    def uploaded(self, rows: int) -> UploadedArtifact:
        if not self.finished:
            raise RuntimeError(f"s3://{self.bucket}/{self.key} was not completed")
        if self._upload_id is None:
            checksum = _b64(self._sha256.digest())
        else:
            composite = hashlib.sha256(b"".join(self._part_digests)).digest()
            checksum = f"{_b64(composite)}-{len(self._part_digests)}"
        return UploadedArtifact(self.key, rows, self.bytes, self._sha256.hexdigest(), checksum)


def _transient(error: Exception) -> bool:
    """Whether S3 could not be reached or failed on its side (5xx, throttling): worth sending again."""
    if isinstance(error, ClientError):
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
    return True


class PartObjects:
    """The objects of an export's parts, written one after the other: each is completed on a
    thread of its own as soon as its part is written, while the next part is being written, so
    memory holds only the part being written, however many there are."""

    def __init__(self, writers: list[S3UploadWriter]):
        self.writers = writers
        self._completer = ThreadPoolExecutor(1, thread_name_prefix="s3-complete")
        self._completing: list[Future] = []

    def open(self, part: int) -> IO[bytes]:
        """The file the writer writes part `part` into."""
        return _WriteThrough(self.writers[part])

    def written(self, part: int) -> None:
        """Part `part` is written: complete its object."""
        self._completing.append(self._completer.submit(self.writers[part].close))

    def complete(self) -> None:
        """Wait until every written part's object is complete; raises the first failure."""
        for completing in self._completing:
            completing.result()
        self._completer.shutdown()

    def abort(self, client: Any, bucket: str) -> None:
        """Leave nothing in S3: stop every upload and delete the objects already completed."""
        wait(self._completing)
        self._completer.shutdown()
        for writer in self.writers:
            writer.abort()
        delete_keys(client, bucket, [writer.key for writer in self.writers if writer.finished])


class _WriteThrough(io.RawIOBase):
    """A file that passes what is written to it on to a part's object."""

    def __init__(self, target: S3UploadWriter):
        super().__init__()
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._target.write(data)


def verify_uploaded(client: Any, bucket: str, artifact: UploadedArtifact) -> None:
    """Check the stored object's size and SHA-256 checksum against the bytes written."""
    key = artifact.key
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    if head["ContentLength"] != artifact.bytes:
        raise IntegrityError(f"s3://{bucket}/{key} holds {head['ContentLength']} bytes, {artifact.bytes} were written")
    stored = head.get("ChecksumSHA256")
    if stored is not None:
        if stored != artifact.expected_checksum:
            raise IntegrityError(f"s3://{bucket}/{key} checksum {stored} does not match the written bytes")
    elif stored_sha256(client, bucket, key) != artifact.sha256:
        # A store that keeps no checksum for the object: read it back instead.
        raise IntegrityError(f"s3://{bucket}/{key} sha256 does not match the written bytes")


def stored_sha256(client: Any, bucket: str, key: str) -> str:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(8 * 1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def put_manifest(client: Any, bucket: str, key_prefix: str, manifest: dict[str, Any]) -> str:
    key = key_prefix + MANIFEST_NAME
    body = json.dumps(manifest, indent=2, default=str).encode()
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return key


def get_manifest(client: Any, bucket: str, key_prefix: str) -> dict[str, Any] | None:
    try:
        body = client.get_object(Bucket=bucket, Key=key_prefix + MANIFEST_NAME)["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return json.loads(body)


def presigned_links(client: Any, bucket: str, files: list[dict[str, Any]], ttl_seconds: int) -> list[dict[str, Any]]:
    """Each file with a presigned GET `url` valid for `ttl_seconds` and the `expires_at` of it."""
    expires_at = (datetime.now(UTC) + timedelta(seconds=ttl_seconds)).isoformat()
    return [
        {
            **file,
            "url": client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": file["key"]}, ExpiresIn=ttl_seconds
            ),
            "expires_at": expires_at,
        }
        for file in files
    ]


def list_keys(client: Any, bucket: str, key_prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def delete_export_objects(client: Any, bucket: str, s3_prefix: str, project_id: str, export_id: str) -> int:
    """Remove every object of an export (manifest first) and abort its unfinished multipart uploads
    (a run killed mid-upload leaves one); returns how many objects and uploads there were."""
    key_prefix = export_key_prefix(s3_prefix, project_id, export_id)
    deleted = delete_keys(client, bucket, list_keys(client, bucket, key_prefix))
    return deleted + abort_uploads(client, bucket, key_prefix)


def unfinished_uploads(client: Any, bucket: str, key_prefix: str) -> list[tuple[str, str]]:
    """(key, upload id) of every multipart upload under `key_prefix` that was neither completed nor aborted."""
    return [
        (upload["Key"], upload["UploadId"])
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key_prefix)
        for upload in page.get("Uploads", [])
    ]


def abort_uploads(client: Any, bucket: str, key_prefix: str) -> int:
    """Abort every unfinished multipart upload under `key_prefix`; returns how many."""
    uploads = unfinished_uploads(client, bucket, key_prefix)
    for key, upload_id in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    return len(uploads)


def delete_keys(client: Any, bucket: str, keys: Iterable[str]) -> int:
    """Delete `keys`, the manifest first so that a half-deleted export never looks finished."""
    ordered = sorted(keys, key=lambda key: not key.endswith("/" + MANIFEST_NAME))
    deleted = 0
    for start in range(0, len(ordered), 1000):
        batch = ordered[start : start + 1000]
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
        deleted += len(batch)
    return deleted
