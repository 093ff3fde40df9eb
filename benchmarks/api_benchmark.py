"""REST API benchmark: create → SUCCEEDED on a live dev deployment (local S3, Dagster webserver and
daemon, the API), then the API alone on a request table no daemon drains.

Prints the create → 202 latency (median and p99) under concurrent clients, each create checked
against the warehouse catalog before its 202 (goal: median <= 30 ms under 20 clients), the same
for GET of one export, the dry run (preview) of the demo's largest table (goal: under 1 s), and
create → SUCCEEDED of a 1,000-row CSV export through the API (`?wait=`), which includes launching
the run (at once, through the webserver) and the run.

    uv run python benchmarks/api_benchmark.py [--clients 20] [--creates 25] [--samples 5]
"""

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from export_pipelines.deploy.api_server import running_api
from export_pipelines.deploy.demo_warehouse import DEMO_CHARGES_ROWS, build_demo_warehouse
from export_pipelines.deploy.dev import running_dev_deployment
from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines.store.api_keys import ApiKeyStore
from export_pipelines.store.database import engine_for

TABLE_EXPORTS = "/api/v1/data/projects/{project}/catalogs/warehouse/schemas/payment/tables/charges/exports"
CREATE_BODY = {"format": "CSV", "columns": ["id", "created_at", "amount"], "limit": 1000}


def concurrent(clients: int, calls: int, call: Callable[[requests.Session, int], None]) -> list[float]:
    """Latencies in ms of `clients` threads each making `calls` calls, all started together."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(number: int) -> None:
        session = requests.Session()
        call(session, -1)  # open the connection first
        start.wait()
        for index in range(calls):
            began = time.perf_counter()
            call(session, number * calls + index)
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def summary(label: str, latencies: list[float], goal: str = "") -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{label}: median {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms over {len(ordered)} calls{goal}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--creates", type=int, default=25, help="creates per client")
    parser.add_argument("--samples", type=int, default=5, help="create -> SUCCEEDED samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        data_dir = Path(tmp)
        warehouse = build_demo_warehouse(data_dir / "warehouse.duckdb")
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_HOME"))}
        with running_dev_deployment(data_dir, environment, *free_ports(2)) as reached:
            api = reached["EXPORTS_API_URL"]
            key = ApiKeyStore(engine_for(reached["EXPORTS_DATABASE_URL"])).create("bench", None)[0]
            headers = {"Authorization": f"Bearer {key}"}
            url = api + TABLE_EXPORTS.format(project="bench-wait") + "?wait=120"
            waits = []
            for sample in range(args.samples + 1):
                began = time.perf_counter()
                answer = requests.post(url, json=CREATE_BODY, headers=headers, timeout=180)
                assert answer.status_code == 200 and answer.json()["status"] == "SUCCEEDED", answer.text
                if sample:  # the first warms the code location and the object store
                    waits.append(time.perf_counter() - began)
            print(
                f"create -> SUCCEEDED through the API (1,000-row CSV, ?wait=), median of {args.samples}: "
                f"{statistics.median(waits):.2f} s (min {min(waits):.2f} s, max {max(waits):.2f} s)",
                flush=True,
            )

        # The API alone, on a request table no daemon drains: its own latency, not the runs'.
        database_url = f"sqlite:///{data_dir / 'api-only.db'}"
        key = ApiKeyStore(engine_for(database_url)).create("bench", None)[0]
        headers = {"Authorization": f"Bearer {key}"}
        settings = {"EXPORTS_WAREHOUSE": str(warehouse), "EXPORTS_DATABASE_URL": database_url}
        with running_api(settings, data_dir / "api.log") as api:
            url = api + TABLE_EXPORTS

            def create(session: requests.Session, number: int) -> None:
                answer = session.post(url.format(project=f"bench-{number % 50}"), json=CREATE_BODY, headers=headers)
                assert answer.status_code == 202, answer.text

            concurrent(1, 20, create)  # warm up
            latencies = concurrent(args.clients, args.creates, create)
            goal = " (goal: median <= 30 ms)"
            print(summary(f"create -> 202 under {args.clients} clients", latencies, goal), flush=True)
            print(summary("create -> 202, one client", concurrent(1, 100, create)), flush=True)
            one = requests.post(url.format(project="bench-get"), json=CREATE_BODY, headers=headers).json()["id"]
            get_url = f"{api}/api/v1/data/projects/bench-get/exports/{one}"

            def get(session: requests.Session, _number: int) -> None:
                assert session.get(get_url, headers=headers).status_code == 200

            print(summary(f"get one export under {args.clients} clients", concurrent(args.clients, 25, get)))

            def preview(session: requests.Session, _number: int) -> None:
                answer = session.post(url.format(project="bench-preview") + "?dryRun=true", json={}, headers=headers)
                assert answer.status_code == 200 and answer.json()["rowCount"] == DEMO_CHARGES_ROWS, answer.text

            largest = f"dry run of the demo's largest table (payment.charges, {DEMO_CHARGES_ROWS:,} rows), one client"
            print(summary(largest, concurrent(1, 20, preview), " (goal: under 1 s)"))


if __name__ == "__main__":
    main()
