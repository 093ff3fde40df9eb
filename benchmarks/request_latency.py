"""Request-table latency on a live dev deployment (webserver, daemon, local S3).

Prints the median time from inserting a PENDING row to its SUCCEEDED status for a 1,000-row
export (one request at a time), and the time to drain 100 small requests inserted at once.
Targets on the 2-core machine: median latency <= 6 s; 100 requests drained in <= 5 minutes.

    uv run python benchmarks/request_latency.py [--samples 7] [--burst 100]
"""

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from export_pipelines.deploy.demo_warehouse import build_demo_warehouse
from export_pipelines.deploy.dev import running_dev_deployment
from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines.store.tables import FINAL_STATUSES

LATENCY_REQUEST = {"source": {"table": "payment.charges"}, "format": "CSV", "limit": 1000}
SMALL_REQUEST = {"source": {"table": "payment.customers"}, "format": "PARQUET", "limit": 100}


def wait_final(store: ExportStore, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {i: store.get(i)["status"] for i in ids}
        if all(s in FINAL_STATUSES for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp:
        data_dir = Path(tmp)
        build_demo_warehouse(data_dir / "warehouse.duckdb")
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_HOME"))}
        with running_dev_deployment(data_dir, environment, *free_ports(2)) as reached:
            store = ExportStore(engine_for(reached["EXPORTS_DATABASE_URL"]))
            latencies = []
            for sample in range(args.samples + 1):
                export_id = str(uuid.uuid4())
                started = time.perf_counter()
                store.insert(export_id, "bench", LATENCY_REQUEST)
                status = wait_final(store, [export_id], 120)[export_id]
                assert status == "SUCCEEDED", f"{export_id} ended {status}: {store.get(export_id)['error']}"
                if sample:  # the first run warms the code location and the object store
                    latencies.append(time.perf_counter() - started)
            print(
                f"insert -> SUCCEEDED, 1,000-row CSV export, median of {args.samples}: "
                f"{statistics.median(latencies):.2f}s (min {min(latencies):.2f}s, max {max(latencies):.2f}s; "
                f"target <= 6 s)",
                flush=True,
            )
            ids = [str(uuid.uuid4()) for _ in range(args.burst)]
            started = time.perf_counter()
            for index, export_id in enumerate(ids):
                store.insert(export_id, f"burst-{index % 10}", SMALL_REQUEST)
            statuses = wait_final(store, ids, 900)
            drained = time.perf_counter() - started
            succeeded = sum(s == "SUCCEEDED" for s in statuses.values())
            print(
                f"{args.burst} small requests inserted at once: drained in {drained:.0f}s "
                f"({succeeded} SUCCEEDED; target <= 300 s)"
            )


if __name__ == "__main__":
    main()
