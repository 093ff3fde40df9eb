"""The S3 server stopped while an export uploads, and started again on the same data and ports. Back
within the patience of a part's upload, the export succeeds and its files are whole (sha256 and rows checked
against the source); gone for longer, the export fails with a clear error, leaves no manifest, and
the expiry pass's sweep leaves no object and no unfinished multipart upload once the server is back."""

import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from export_pipelines.deploy.local_s3 import PORTS_NEEDED, LocalS3, free_ports, run_local_s3
from export_pipelines.engine.artifacts import (
    ExportS3Resource,
    S3UploadWriter,
    get_manifest,
    list_keys,
    stored_sha256,
    unfinished_uploads,
)
from export_pipelines.orchestration.expiry import expire
from export_pipelines.orchestration.jobs import export_job
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines_tests.conftest import BUCKET, use_settings, wait_for
from export_pipelines_tests.faults.conftest import LARGE_ROWS

REQUEST = {"source": {"table": "payment.large_charges"}, "format": "CSV"}  # about 40 parts of 8 MiB


class RestartableS3:
    """A local S3 server that can be stopped and started again as the same server."""

    def __init__(self, data_dir: Path):
        self.data_dir, self.ports = data_dir, free_ports(PORTS_NEEDED)
        self._running = contextlib.ExitStack()
        self.server = self.start()

    def start(self) -> LocalS3:
        return self._running.enter_context(run_local_s3(self.data_dir, buckets=(BUCKET,), ports=self.ports))

    def stop(self) -> None:
        self._running.close()


@pytest.fixture
def s3(tmp_path: Path):
    server = RestartableS3(tmp_path / "s3")
    yield server
    server.stop()


def _outage(s3: RestartableS3, prefix: str, down_seconds: float) -> threading.Thread:
    """Stops the server once an upload under `prefix` is under way, starts it after `down_seconds`."""
    client = s3.server.client()

    def uploading() -> bool:
        return bool(unfinished_uploads(client, BUCKET, prefix))

    def run() -> None:
        wait_for(uploading, "an upload under way", 120)
        s3.stop()
        threading.Event().wait(down_seconds)  # the length of the outage
        s3.start()

    thread = threading.Thread(target=run, name="s3-outage")
    thread.start()
    return thread


def _export_through_an_outage(tmp_path, monkeypatch, s3, warehouse: Path, down_seconds: float):
    prefix = f"outage-{uuid.uuid4().hex[:6]}/"
    database_url = use_settings(monkeypatch, s3.server, warehouse, tmp_path, prefix, max_rows=LARGE_ROWS)
    outage = _outage(s3, prefix, down_seconds)
    began = time.monotonic()
    result = export_job.execute_in_process(run_config=REQUEST, raise_on_error=False)
    took = time.monotonic() - began
    outage.join()
    record = ExportStore(engine_for(database_url)).find_by_run(result.run_id)
    patience = S3UploadWriter.PATIENCE_SECONDS
    print(f"\nS3 down {down_seconds:.0f} s, patience {patience:.0f} s: {record['status']} after {took:.0f} s")
    return record, prefix, ExportStore(engine_for(database_url))


def test_s3_back_within_the_retries(tmp_path: Path, monkeypatch, s3: RestartableS3, fault_warehouse: Path) -> None:
    record, prefix, _ = _export_through_an_outage(tmp_path, monkeypatch, s3, fault_warehouse, 1)
    assert record["status"] == "SUCCEEDED", record["error"]
    client = s3.server.client()
    key_prefix = f"{prefix}default/{record['id']}/"
    manifest = get_manifest(client, BUCKET, key_prefix)
    assert [file["key"] for file in manifest["files"]] == [file["key"] for file in record["files"]]
    assert set(list_keys(client, BUCKET, key_prefix)) == {f["key"] for f in record["files"]} | {
        key_prefix + "manifest.json"
    }
    for file in record["files"]:
        assert stored_sha256(client, BUCKET, file["key"]) == file["sha256"]
    (file,) = record["files"]
    path = tmp_path / "export.csv"
    client.download_file(BUCKET, file["key"], str(path))
    check = "SELECT count(*), sum(id), sum(amount::DECIMAL(18, 2)) FROM {}"
    with duckdb.connect(str(fault_warehouse), read_only=True) as warehouse:
        assert (
            duckdb.sql(check.format(f"read_csv('{path}')")).fetchall()
            == warehouse.sql(check.format("payment.large_charges")).fetchall()
        )


def test_s3_gone_longer_than_the_retries(tmp_path: Path, monkeypatch, s3: RestartableS3, fault_warehouse: Path) -> None:
    monkeypatch.setattr(S3UploadWriter, "PATIENCE_SECONDS", 5.0)
    record, prefix, store = _export_through_an_outage(tmp_path, monkeypatch, s3, fault_warehouse, 20)
    assert record["status"] == "FAILED"
    assert record["error"].startswith("StorageUnavailable: S3 did not take part"), record["error"]
    assert "through 5 s of retries" in record["error"]
    client = s3.server.client()
    key_prefix = f"{prefix}default/{record['id']}/"
    assert get_manifest(client, BUCKET, key_prefix) is None
    left = unfinished_uploads(client, BUCKET, key_prefix)
    counts = expire(store, ExportS3Resource(), datetime.now(UTC) - timedelta(days=1), limit=10)
    print(f"left behind: {len(left)} unfinished upload(s), {list_keys(client, BUCKET, key_prefix)}; swept: {counts}")
    assert list_keys(client, BUCKET, key_prefix) == []
    assert unfinished_uploads(client, BUCKET, key_prefix) == []
