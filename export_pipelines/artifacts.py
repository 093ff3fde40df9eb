"""Export artifacts in S3: the key layout, verified uploads, the manifest and clean-up.

Layout (SPEC): `<prefix><project_id>/<export_id>/<name>-<part>.<ext>[.gz|.zst]`, then
`manifest.json`, written last: an export without a manifest is not finished.
"""

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import Field

from export_pipelines.request import InvalidRequest
from export_pipelines.settings import env, optional_env
from export_pipelines.writer import MULTIPART_CHUNK_BYTES, MULTIPART_THRESHOLD_BYTES, LocalArtifact

MANIFEST_NAME = "manifest.json"
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=MULTIPART_THRESHOLD_BYTES,
    multipart_chunksize=MULTIPART_CHUNK_BYTES,
    max_concurrency=4,
)


class ExportS3Resource(S3Resource):
    """S3 (or an S3-compatible server) where artifacts go. Credentials come from the standard
    AWS environment variables, never from run config."""

    bucket: str | None = Field(
        default=None, description="Bucket of the artifacts. Default: $EXPORTS_BUCKET, else exports."
    )
    prefix: str | None = Field(
        default=None, description="Key prefix of every export. Default: $EXPORTS_PREFIX, else empty."
    )

    @property
    def resolved_bucket(self) -> str:
        return self.bucket or env("EXPORTS_BUCKET")

    @property
    def resolved_prefix(self) -> str:
        return self.prefix if self.prefix is not None else env("EXPORTS_PREFIX")

    def get_object_to_set_on_execution_context(self) -> Any:
        # Hooks and legacy contexts get this resource itself (bucket and prefix included).
        return self

    def get_client(self) -> Any:
        import boto3

        endpoint_url = self.endpoint_url or optional_env("EXPORTS_S3_ENDPOINT_URL")
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "s3",
            region_name=self.region_name or optional_env("AWS_REGION") or "us-east-1",
            endpoint_url=endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
                # S3-compatible servers have had bugs with boto's default request checksums;
                # integrity is checked against our own hashes instead.
                request_checksum_calculation="when_required" if endpoint_url else "when_supported",
                response_checksum_validation="when_required" if endpoint_url else "when_supported",
            ),
        )


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


def upload_verified(client: Any, bucket: str, key: str, artifact: LocalArtifact) -> None:
    """Upload a file (multipart above the threshold) and check the stored bytes against its hashes."""
    client.upload_file(str(artifact.path), bucket, key, Config=TRANSFER_CONFIG)
    head = client.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != artifact.bytes:
        raise IntegrityError(f"s3://{bucket}/{key} holds {head['ContentLength']} bytes, {artifact.bytes} were written")
    etag = head["ETag"].strip('"')
    if re.fullmatch(r"[0-9a-f]{32}(-\d+)?", etag):
        if etag != artifact.expected_etag:
            raise IntegrityError(f"s3://{bucket}/{key} ETag {etag} does not match the written bytes")
    elif stored_sha256(client, bucket, key) != artifact.sha256:
        # ETags that are not MD5s (encrypted buckets): read the object back instead.
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


def list_keys(client: Any, bucket: str, key_prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def delete_keys(client: Any, bucket: str, keys: Iterable[str]) -> int:
    """Delete `keys`, the manifest first so that a half-deleted export never looks finished."""
    ordered = sorted(keys, key=lambda key: not key.endswith("/" + MANIFEST_NAME))
    deleted = 0
    for start in range(0, len(ordered), 1000):
        batch = ordered[start : start + 1000]
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True})
        deleted += len(batch)
    return deleted
