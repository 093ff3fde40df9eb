"""Request-table latency on a live dev deployment (webserver, daemon, a warm run worker, local S3).

Prints the median time from inserting a PENDING row to its SUCCEEDED status for a 1,000-row
export (one request at a time) with where the time goes (insert → run created by the API's watch
of the table, or by the request sensor → run started in a worker → SUCCEEDED recorded → seen), the
time to drain small requests inserted at once, and the memory of the run worker's pool processes
after 10 and after 200 runs.
Targets on the 2-core machine: median <= 2.5 s; >= 60 small exports a minute; pool RSS after
200 runs within 1.5x of that after 10.

    uv run python benchmarks/request_latency.py [--samples 7] [--burst 100] [--runs-for-memory 200]
"""

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import psutil

from export_pipelines.deploy.demo_warehouse import build_demo_warehouse
from export_pipelines.deploy.dev import running_dev_deployment
from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines.store.tables import FINAL_STATUSES

LATENCY_REQUEST = {"source": {"table": "payment.charges"}, "format": "CSV", "limit": 1000}
SMALL_REQUEST = {"source": {"table": "payment.customers"}, "format": "PARQUET", "limit": 100}
STAGES = ("launch: insert -> run created", "queue: created -> run started", "run: started -> SUCCEEDED",
          "poll: SUCCEEDED -> seen")  # fmt: skip


def wait_final(store: ExportStore, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {i: store.get(i)["status"] for i in ids}
        if all(s in FINAL_STATUSES for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.05)


def stages(instance: dg.DagsterInstance, store: ExportStore, export_id: str, inserted: float, seen: float) -> list:
    """Seconds spent in each stage of one export (wall-clock times of the run's record)."""
    record = store.get(export_id)
    run = instance.get_run_records(dg.RunsFilter(run_ids=[record["run_id"]]))[0]
    created, finished = run.create_timestamp.timestamp(), record["finished_at"].timestamp()
    return [created - inserted, run.start_time - created, finished - run.start_time, seen - finished]


def pool_rss_mib(dev_pid: int) -> float:
    """Resident memory of the run worker's pool processes, summed."""
    total = 0
    for process in psutil.Process(dev_pid).children(recursive=True):
        try:
            if "export_pipelines.cli worker" in " ".join(process.cmdline()):
                total += sum(child.memory_info().rss for child in process.children())
        except psutil.NoSuchProcess:  # a run's short-lived helper process
            continue
    return total / 2**20


def drain(store: ExportStore, count: int, project: str = "burst") -> tuple[float, int]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    started = time.perf_counter()
    for index, export_id in enumerate(ids):
        store.insert(export_id, f"{project}-{index % 10}", SMALL_REQUEST)
    statuses = wait_final(store, ids, 1800)
    return time.perf_counter() - started, sum(s == "SUCCEEDED" for s in statuses.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--runs-for-memory", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp:
        data_dir = Path(tmp)
        build_demo_warehouse(data_dir / "warehouse.duckdb")
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_HOME"))}
        with running_dev_deployment(data_dir, environment, *free_ports(2)) as reached:
            store = ExportStore(engine_for(reached["EXPORTS_DATABASE_URL"]))
            os.environ["DAGSTER_HOME"] = reached["DAGSTER_HOME"]
            latencies, breakdown = [], []
            with dg.DagsterInstance.get() as instance:
                for sample in range(args.samples + 1):
                    export_id = str(uuid.uuid4())
                    inserted, started = time.time(), time.perf_counter()
                    store.insert(export_id, "bench", LATENCY_REQUEST)
                    status = wait_final(store, [export_id], 120)[export_id]
                    assert status == "SUCCEEDED", f"{export_id} ended {status}: {store.get(export_id)['error']}"
                    if sample:  # the first run warms the object store
                        latencies.append(time.perf_counter() - started)
                        breakdown.append(stages(instance, store, export_id, inserted, time.time()))
            print(
                f"insert -> SUCCEEDED, 1,000-row CSV export, median of {args.samples}: "
                f"{statistics.median(latencies):.2f}s (min {min(latencies):.2f}s, max {max(latencies):.2f}s; "
                f"target <= 2.5 s)",
                flush=True,
            )
            for name, seconds in zip(STAGES, zip(*breakdown, strict=True), strict=True):
                print(f"  {name:<36} median {statistics.median(seconds):.2f}s")
            pid = int(reached["_pid"])
            drain(store, max(0, 10 - (args.samples + 1)), "memory")
            after_10 = pool_rss_mib(pid)
            drained, succeeded = drain(store, args.burst)
            print(
                f"{args.burst} small requests inserted at once: drained in {drained:.0f}s, "
                f"{args.burst / drained * 60:.0f} a minute ({succeeded} SUCCEEDED; target >= 60 a minute)",
                flush=True,
            )
            drain(store, max(0, args.runs_for_memory - 10 - args.burst), "memory")
            after_200 = pool_rss_mib(pid)
            print(
                f"run worker pool RSS: {after_10:.0f} MiB after 10 runs, {after_200:.0f} MiB after "
                f"{args.runs_for_memory} ({after_200 / after_10:.2f}x; target <= 1.5x)"
            )


if __name__ == "__main__":
    main()
