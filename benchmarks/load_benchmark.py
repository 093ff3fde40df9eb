"""Load: 500 creates through the REST API from 5 processes and 500 rows inserted into the request
table at once, on a live dev deployment whose request table is on PostgreSQL (the machine's server,
a fresh database). Prints the API's create latency (median, p99), the time until every export
ended, and checks what must hold: exactly 1,000 exports, each SUCCEEDED with exactly one
successful run, none lost, none doubled.

    uv run python benchmarks/load_benchmark.py [--api 500] [--table 500] [--processes 5]
"""

import argparse
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import requests

from export_pipelines.deploy.demo_warehouse import build_demo_warehouse
from export_pipelines.deploy.dev import running_dev_deployment
from export_pipelines.deploy.local_s3 import free_ports
from export_pipelines.store.api_keys import ApiKeyStore
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines.store.tables import FINAL_STATUSES

ADMIN_DSN = os.environ.get("EXPORTS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ROUTE = "/api/v1/data/projects/load/catalogs/warehouse/schemas/payment/tables/customers/exports"
BODY = {"format": "CSV", "limit": 100}
TABLE_REQUEST = {"source": {"table": "payment.invoices"}, "format": "PARQUET", "limit": 100}


def create_many(api: str, key: str, count: int) -> list[tuple[float, str]]:
    """One client process: `count` creates, one after another; (latency ms, export id) of each."""
    session, answers = requests.Session(), []
    for _ in range(count):
        began = time.perf_counter()
        answer = session.post(api + ROUTE, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert answer.status_code == 202, answer.text
        answers.append(((time.perf_counter() - began) * 1000, answer.json()["id"]))
    return answers


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new database on the PostgreSQL server, dropped afterwards."""
    name = f"load_{uuid.uuid4().hex[:8]}"

    def admin(statement: str) -> None:
        connection = psycopg2.connect(ADMIN_DSN)
        connection.autocommit = True
        connection.cursor().execute(statement)
        connection.close()

    admin(f"CREATE DATABASE {name}")
    try:
        yield ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        engine_for.cache_clear()
        admin(f"DROP DATABASE {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api", type=int, default=500, help="creates through the REST API")
    parser.add_argument("--table", type=int, default=500, help="rows inserted into the request table")
    parser.add_argument("--processes", type=int, default=5, help="API client processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp, fresh_database() as database_url:
        data_dir = Path(tmp)
        build_demo_warehouse(data_dir / "warehouse.duckdb")
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_HOME"))}
        environment["EXPORTS_DATABASE_URL"] = database_url
        with running_dev_deployment(data_dir, environment, *free_ports(2)) as reached:
            store = ExportStore(engine_for(reached["EXPORTS_DATABASE_URL"]))
            key = ApiKeyStore(store.engine).create("load", None)[0]
            table_ids: list[str] = []

            def insert_rows() -> None:
                for _ in range(args.table):
                    table_ids.append(store.insert(str(uuid.uuid4()), "load", TABLE_REQUEST))

            began = time.monotonic()
            inserting = threading.Thread(target=insert_rows)
            inserting.start()
            share = [args.api // args.processes + (i < args.api % args.processes) for i in range(args.processes)]
            jobs = [(reached["EXPORTS_API_URL"], key, count) for count in share]
            with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
                created = [answer for part in pool.starmap(create_many, jobs) for answer in part]
            inserting.join()
            accepted = time.monotonic() - began
            ids = [export_id for _, export_id in created] + table_ids
            while (final := store.count_exports("load", sorted(FINAL_STATUSES))) < len(ids):
                print(f"  {final} of {len(ids)} ended after {time.monotonic() - began:.0f} s", flush=True)
                time.sleep(10)
            drained = time.monotonic() - began
            statuses = Counter(store.get(export_id)["status"] for export_id in ids)
            os.environ["DAGSTER_HOME"] = reached["DAGSTER_HOME"]
            with dg.DagsterInstance.get() as instance:
                runs = instance.get_runs(dg.RunsFilter(job_name="export_job"))
            successes = Counter(run.tags.get("export_id") for run in runs if run.status == dg.DagsterRunStatus.SUCCESS)
            recorded = store.count_exports("load")
    latencies = sorted(latency for latency, _ in created)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{len(created)} API creates from {args.processes} processes and {len(table_ids)} table inserts "
          f"accepted in {accepted:.1f} s; create -> 202 median {statistics.median(latencies):.0f} ms, "
          f"p99 {p99:.0f} ms")  # fmt: skip
    print(f"all {len(ids)} exports ended in {drained:.0f} s ({60 * len(ids) / drained:.0f} a minute): {dict(statuses)}")
    doubled = sum(1 for count in successes.values() if count > 1)
    print(f"exports {recorded} (expected {len(ids)}), distinct ids {len(set(ids))}, "
          f"successful runs {sum(successes.values())}, exports with more than one: {doubled}, "
          f"without one: {len(set(ids) - set(successes))}")  # fmt: skip


if __name__ == "__main__":
    main()
