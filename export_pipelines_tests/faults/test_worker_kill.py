"""A run worker's whole host killed (the worker and its pool processes, SIGKILL) while it exports a
large table and holds the next run it took from the broker: the export it was writing ends FAILED
within the bound (run monitoring sees the worker stop answering), leaves no manifest, and nothing
once the expiry pass swept its unfinished upload; the run it held is lost before it began, and the
system queues that export again; a retry of the failed one succeeds."""

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import psutil

from export_pipelines.engine.artifacts import ExportS3Resource
from export_pipelines.orchestration.expiry import expire
from export_pipelines.orchestration.workers import WORKER_SILENT_SECONDS
from export_pipelines.service.exports import ExportService
from export_pipelines_tests.conftest import download, wait_for
from export_pipelines_tests.faults.conftest import LARGE_ROWS
from export_pipelines_tests.faults.stack import MONITORING, Stack

# Silent this long, then the next monitoring pass fails the run and the failure sensor its export.
FAILED_WITHIN = WORKER_SILENT_SECONDS + 2 * MONITORING["poll_interval_seconds"] + 15 + 30


def test_a_worker_host_killed_mid_export(tmp_path: Path, s3_server, fault_warehouse: Path) -> None:
    stack = Stack(tmp_path, s3_server, fault_warehouse)
    with stack.daemon("daemon"), stack.instance():
        with stack.worker("host-a", concurrency=1) as host:
            (large,) = stack.insert([{"source": {"table": "payment.large_charges"}, "format": "CSV",
                                      "compression": "GZIP"}])  # fmt: skip
            wait_for(stack.uploads, "the large export to be uploading")
            # Frozen mid-upload until the kill: on a fast machine it would otherwise finish first.
            for pool_process in psutil.Process(host.pid).children(recursive=True):
                pool_process.suspend()
            (held,) = stack.insert([{"source": {"table": "payment.invoices"}, "limit": 10}])
            wait_for(lambda: stack.log("host-a").count("] received") >= 2, "the worker to take the next run")
            os.killpg(host.pid, signal.SIGKILL)
        killed = time.monotonic()
        with stack.worker("host-b", concurrency=1):
            record = wait_for(
                lambda: (r := stack.store.get(large))["status"] != "RUNNING" and r, "the export to end", FAILED_WITHIN
            )
            failed_after = time.monotonic() - killed
            assert record["status"] == "FAILED" and "has not answered" in record["error"], record
            assert stack.uploads(), "the upload it froze in is left unfinished"
            assert stack.objects(f"default/{large}/") == [], "no manifest, no file"
            with stack.instance():
                expire(stack.store, ExportS3Resource(), datetime.now(UTC) - timedelta(days=1), limit=100)
            assert stack.uploads() == [] and stack.objects(f"default/{large}/") == []

            done = wait_for(lambda: (r := stack.store.get(held))["status"] == "SUCCEEDED" and r, "the held export")
            assert done["lost_runs"] == 1 and done["attempt"] == 1, "lost with the host, queued again by the system"
            stack.store.retry(large)
            retried = wait_for(lambda: (r := stack.store.get(large))["status"] in ("SUCCEEDED", "FAILED") and r,
                               "the retry", 300)  # fmt: skip
            assert retried["status"] == "SUCCEEDED", retried["error"]
    print(f"\nthe export of the killed host FAILED {failed_after:.0f} s after the kill (bound {FAILED_WITHIN:.0f} s)")
    with stack.instance():
        (link,) = ExportService.from_environment().download_urls(large, "default")
    path = tmp_path / "large.csv.gz"
    path.write_bytes(download(link["url"]))
    check = "SELECT count(*), sum(id) FROM {}"
    [exported] = duckdb.sql(check.format(f"read_csv('{path}')")).fetchall()
    with duckdb.connect(str(fault_warehouse), read_only=True) as warehouse:
        assert [exported] == warehouse.sql(check.format("payment.large_charges")).fetchall()
    assert exported[0] == LARGE_ROWS
