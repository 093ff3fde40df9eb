"""End to end on a live deployment started like a user starts it (`export-pipelines dev`: the
local S3 server, the Dagster webserver and a real dagster-daemon on a temporary DAGSTER_HOME):
rows inserted into the request table reach SUCCEEDED with downloadable artifacts, the CLI
submits and downloads, a killed run worker ends FAILED, a cancelled RUNNING export ends
CANCELLED without artifacts. Every wait is on a condition with a deadline.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psutil
import pytest
import sqlalchemy as sa

from export_pipelines.demo_warehouse import build_demo_warehouse, create_charges
from export_pipelines.dev import running_dev_deployment
from export_pipelines.local_s3 import free_ports
from export_pipelines.service import ExportService
from export_pipelines.store import ExportStatus, ExportStore, engine_for, export_requests
from export_pipelines_tests.conftest import wait_for

BIG_ROWS = 3_000_000  # payment.big_charges: an export slow enough to be killed or cancelled mid-way


class Deployment:
    def __init__(self, data_dir: Path, pid: int, port: int, environment: dict[str, str]):
        self.data_dir, self.pid, self.port, self.environment = data_dir, pid, port, environment
        self.store = ExportStore(engine_for(self.environment["EXPORTS_DATABASE_URL"]))

    def insert(self, request: dict[str, Any], project_id: str = "default") -> str:
        export_id = str(uuid.uuid4())
        self.store.insert(export_id, project_id, request, {"user_id": "e2e"})
        return export_id

    def status(self, export_id: str) -> str:
        return self.store.get(export_id)["status"]

    def wait_status(self, export_id: str, statuses: set[str], timeout: float = 180) -> dict[str, Any]:
        wait_for(lambda: self.status(export_id) in statuses, f"export {export_id} to be {statuses}", timeout)
        return self.store.get(export_id)

    def run_workers(self) -> list[psutil.Process]:
        """Run worker processes: the code server's children executing a run."""
        workers = []
        for process in psutil.Process(self.pid).children(recursive=True):
            try:
                if "multiprocessing" in " ".join(process.cmdline()):
                    workers.append(process)
            except psutil.NoSuchProcess:
                continue
        return workers


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data_dir = tmp_path_factory.mktemp("live")
    warehouse = build_demo_warehouse(data_dir / "warehouse.duckdb")
    with duckdb.connect(str(warehouse)) as connection:
        create_charges(connection, BIG_ROWS, table="payment.big_charges")
    environment = {**os.environ, "EXPORTS_WAREHOUSE": str(warehouse), "EXPORTS_MAX_ROWS": str(BIG_ROWS)}
    for name in ("EXPORTS_DATABASE_URL", "EXPORTS_S3_ENDPOINT_URL", "EXPORTS_PREFIX", "DAGSTER_HOME"):
        environment.pop(name, None)
    port = free_ports(1)[0]
    with running_dev_deployment(data_dir, environment, port) as reached:
        yield Deployment(data_dir, int(reached.pop("_pid")), port, reached)


def test_rows_inserted_into_the_table_are_exported(deployment: Deployment) -> None:
    requests = [
        {"source": {"table": "payment.charges"}, "format": "CSV", "compression": "GZIP", "limit": 1000},
        {"source": {"query": "charges_view"}, "format": "PARQUET", "limit": 500},
        {"source": {"table": "payment.customers"}, "format": "jsonl", "filters": {"AND": [
            {"field": "active", "operator": "eq", "value": True}]}},
    ]  # fmt: skip
    ids = [deployment.insert(request, project_id="acme") for request in requests]
    for export_id, rows in zip(ids, [1000, 500, 2500], strict=True):
        record = deployment.wait_status(export_id, {"SUCCEEDED", "FAILED"})
        assert record["status"] == "SUCCEEDED", record["error"]
        assert record["row_count"] == rows and record["run_id"] and record["started_at"] <= record["finished_at"]
        assert record["client_source"] == "table" and record["user_id"] == "e2e"
        for link in _links(deployment, export_id):
            with urllib.request.urlopen(link["url"], timeout=30) as response:
                assert hashlib.sha256(response.read()).hexdigest() == link["sha256"]


def _links(deployment: Deployment, export_id: str) -> list[dict[str, Any]]:
    previous = {k: os.environ.get(k) for k in deployment.environment}
    os.environ.update(deployment.environment)
    try:
        return ExportService.from_environment().download_urls(export_id, deployment.store.get(export_id)["project_id"])
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
    export_id = deployment.insert({"source": {"table": "payment.big_charges"}, "format": "CSV", "compression": "GZIP"})
    deployment.wait_status(export_id, {"RUNNING"})
    workers = wait_for(deployment.run_workers, "the run worker process")
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    record = deployment.wait_status(export_id, {"FAILED", "SUCCEEDED"}, timeout=240)
    assert record["status"] == "FAILED"
    assert record["error"]


def test_cancelled_running_export_ends_cancelled_without_artifacts(deployment: Deployment) -> None:
    export_id = deployment.insert({"source": {"table": "payment.big_charges"}, "format": "CSV", "compression": "GZIP"})
    deployment.wait_status(export_id, {"RUNNING"})
    os.environ["DAGSTER_HOME"] = deployment.environment["DAGSTER_HOME"]
    try:
        with dg.DagsterInstance.get() as instance:
            service = ExportService.from_environment(instance)
            service.store = deployment.store
            assert service.cancel(export_id) == "RUNNING"
    finally:
        os.environ.pop("DAGSTER_HOME")
    record = deployment.wait_status(export_id, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=240)
    assert record["status"] == ExportStatus.CANCELLED
    s3 = _client(deployment)
    objects = s3.list_objects_v2(Bucket="exports", Prefix=f"default/{export_id}/").get("Contents", [])
    assert objects == []


def _client(deployment: Deployment):
    from export_pipelines.artifacts import ExportS3Resource

    env = deployment.environment
    return ExportS3Resource(
        endpoint_url=env["EXPORTS_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).get_client()


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
    assert _client(deployment).list_objects_v2(Bucket="exports", Prefix=f"default/{export_id}/").get("Contents") is None
