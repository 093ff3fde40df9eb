"""End to end on a live deployment started like a user starts it (`export-pipelines dev`: the
local S3 server, the Dagster webserver and a real dagster-daemon on a temporary DAGSTER_HOME):
rows inserted into the request table reach SUCCEEDED with downloadable artifacts, the CLI
submits and downloads, a killed run worker ends FAILED (no manifest, nothing left after the expiry
pass, a retry succeeds), a cancelled RUNNING export ends
CANCELLED without artifacts. Every wait is on a condition with a deadline.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import sqlalchemy as sa

from export_pipelines.engine.artifacts import ExportS3Resource, list_keys, unfinished_uploads
from export_pipelines.orchestration.expiry import expire
from export_pipelines.orchestration.launch import LAUNCH_TAG, LAUNCHED_AT_ONCE, REQUEST_SENSOR
from export_pipelines.service.exports import ExportService
from export_pipelines.store.tables import ExportStatus, export_requests
from export_pipelines_tests.conftest import download, wait_for
from export_pipelines_tests.live import Deployment


def test_rows_inserted_into_the_table_are_exported(deployment: Deployment) -> None:
    requests = [
        {"source": {"table": "payment.charges"}, "format": "CSV", "compression": "GZIP", "limit": 1000},
        {"source": {"query": "charges_view"}, "format": "PARQUET", "limit": 500},
        {"source": {"table": "payment.customers"}, "format": "jsonl", "filters": {"AND": [
            {"field": "active", "operator": "eq", "value": True}]}},
    ]  # fmt: skip
    with deployment.sensor_stopped(REQUEST_SENSOR):  # the API's watch of the table alone launches them
        ids = [deployment.insert(request, project_id="acme") for request in requests]
        records = [deployment.wait_status(export_id, {"SUCCEEDED", "FAILED"}) for export_id in ids]
    for export_id, rows, record in zip(ids, [1000, 500, 2500], records, strict=True):
        assert record["status"] == "SUCCEEDED", record["error"]
        assert record["row_count"] == rows and record["run_id"] and record["started_at"] <= record["finished_at"]
        assert record["client_source"] == "table" and record["user_id"] == "e2e"
        with deployment.settings(), dg.DagsterInstance.get() as instance:
            [run] = instance.get_runs(dg.RunsFilter(tags={"export_id": export_id}))
        assert run.tags[LAUNCH_TAG] == LAUNCHED_AT_ONCE
        for link in deployment.links(export_id):
            assert hashlib.sha256(download(link["url"])).hexdigest() == link["sha256"]


def test_cli_submits_waits_and_downloads(deployment: Deployment, tmp_path: Path) -> None:
    request = json.dumps({"source": {"table": "payment.invoices"}, "format": "parquet", "limit": 123})
    done = subprocess.run(
        [sys.executable, "-m", "export_pipelines.cli", "submit", request, "--user", "cli-user",
         "--download", str(tmp_path)],
        env={**os.environ, **deployment.environment},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCEEDED" in done.stdout and "sha256 ok" in done.stdout
    [artifact] = tmp_path.glob("invoices-00000.parquet")
    assert duckdb.sql(f"SELECT count(*) FROM '{artifact}'").fetchall() == [(123,)]
    listing = subprocess.run(
        [sys.executable, "-m", "export_pipelines.cli", "list", "--status", "succeeded"],
        env={**os.environ, **deployment.environment},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0 and "invoices" in listing.stdout


def test_killed_run_worker_ends_failed(deployment: Deployment) -> None:
    export_id = deployment.insert(
        {"source": {"table": "payment.large_charges"}, "format": "CSV", "compression": "GZIP"}
    )
    deployment.wait_status(export_id, {"RUNNING"})
    worker = wait_for(lambda: deployment.run_worker(export_id), "the process executing the run")
    worker.send_signal(signal.SIGKILL)
    record = deployment.wait_status(export_id, {"FAILED", "SUCCEEDED"}, timeout=240)
    assert record["status"] == "FAILED"
    assert record["error"]
    s3, key_prefix = deployment.s3_client(), f"default/{export_id}/"
    assert "manifest.json" not in " ".join(list_keys(s3, "exports", key_prefix))
    with deployment.settings():
        expire(deployment.store, ExportS3Resource(), datetime.now(UTC) - timedelta(days=1), limit=50)
    assert list_keys(s3, "exports", key_prefix) == []
    assert unfinished_uploads(s3, "exports", key_prefix) == []
    with deployment.settings(), dg.DagsterInstance.get() as instance:
        ExportService.from_environment(instance).retry(export_id)
    retried = deployment.wait_status(export_id, {"FAILED", "SUCCEEDED"}, timeout=240)
    assert retried["status"] == "SUCCEEDED" and retried["attempt"] == 1, retried["error"]


def test_cancelled_running_export_ends_cancelled_without_artifacts(deployment: Deployment) -> None:
    export_id = deployment.insert(
        {"source": {"table": "payment.large_charges"}, "format": "CSV", "compression": "GZIP"}
    )
    deployment.wait_status(export_id, {"RUNNING"})
    with deployment.settings(), dg.DagsterInstance.get() as instance:
        assert ExportService.from_environment(instance).cancel(export_id) == "RUNNING"
    record = deployment.wait_status(export_id, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=240)
    assert record["status"] == ExportStatus.CANCELLED
    s3 = deployment.s3_client()
    objects = s3.list_objects_v2(Bucket="exports", Prefix=f"default/{export_id}/").get("Contents", [])
    assert objects == []


def test_expiry_job_launched_through_graphql_expires_old_exports(deployment: Deployment) -> None:
    from dagster_graphql import DagsterGraphQLClient

    export_id = deployment.insert({"source": {"table": "payment.customers"}, "limit": 10})
    assert deployment.wait_status(export_id, {"SUCCEEDED", "FAILED"})["status"] == "SUCCEEDED"
    with deployment.store.engine.begin() as connection:
        connection.execute(
            sa.update(export_requests)
            .where(export_requests.c.id == export_id)
            .values(finished_at=datetime.now(UTC) - timedelta(days=30))
        )
    client = DagsterGraphQLClient("127.0.0.1", port_number=deployment.port)
    run_id = client.submit_job_execution("expire_exports_job")
    status = wait_for(
        lambda: (
            (s := client.get_run_status(run_id)) in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) and s
        ),
        "the expiry run",
    )
    assert status == dg.DagsterRunStatus.SUCCESS
    assert deployment.status(export_id) == "EXPIRED"
    objects = deployment.s3_client().list_objects_v2(Bucket="exports", Prefix=f"default/{export_id}/")
    assert objects.get("Contents") is None
