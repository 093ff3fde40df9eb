"""The production configuration of `deploy/production` brought up on this machine: Dagster's storage
and the request table on PostgreSQL, a real Redis (`redis-server` on a free loopback port, started
and stopped here: the test fails if the binary is missing) as the broker, two run worker
processes standing for two machines, and the daemon. A burst of exports inserted into the
request table all succeed, run by both workers, with artifacts in the local S3 server.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psutil
import pytest
import redis

from export_pipelines.deploy.dev import PROJECT_ROOT
from export_pipelines.deploy.local_s3 import LocalS3, free_ports
from export_pipelines.store.database import engine_for
from export_pipelines.store.exports import ExportStore
from export_pipelines.store.tables import FINAL_STATUSES
from export_pipelines_tests.conftest import BUCKET, environment, fresh_postgres_database, started, wait_for

BURST = 12


@contextlib.contextmanager
def redis_server(log: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required on PATH for the production configuration test")
    port = free_ports(1)[0]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _pings(url), "redis-server to answer", timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _pings(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError:
        return False


def test_production_configuration_runs_a_burst_on_postgres_and_redis(
    tmp_path: Path, s3_server: LocalS3, demo_warehouse: Path
) -> None:
    with contextlib.ExitStack() as stack:
        dagster_url = stack.enter_context(fresh_postgres_database("dagster"))
        exports_url = stack.enter_context(fresh_postgres_database("exports"))
        broker = stack.enter_context(redis_server(tmp_path / "redis.log"))
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(PROJECT_ROOT / "deploy" / "production" / "dagster.yaml", home / "dagster.yaml")
        settings = {
            **s3_server.environment(),
            "DAGSTER_HOME": str(home),
            # dagster-postgres needs psycopg2 (SQLAlchemy 2.1 would pick psycopg 3 for postgresql://).
            "DAGSTER_POSTGRES_URL": dagster_url.replace("postgresql://", "postgresql+psycopg2://", 1),
            "EXPORTS_DATABASE_URL": exports_url,
            "EXPORTS_BROKER_URL": broker,
            "EXPORTS_WAREHOUSE": str(demo_warehouse),
            "EXPORTS_BUCKET": BUCKET,
            "EXPORTS_PREFIX": f"production-{uuid.uuid4().hex[:6]}/",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("EXPORTS_", "DAGSTER_"))}, **settings}
        workspace = str(PROJECT_ROOT / "deploy" / "production" / "workspace.yaml")
        worker = [sys.executable, "-m", "export_pipelines.cli", "worker", "--concurrency", "1"]
        workers = [
            stack.enter_context(started([*worker, "--hostname", f"{name}@%h"], env, tmp_path / f"{name}.log"))
            for name in ("machine-a", "machine-b")
        ]
        daemon_command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", workspace]
        daemon = stack.enter_context(started(daemon_command, env, tmp_path / "daemon.log"))
        store = ExportStore(engine_for(exports_url))
        ids = []
        for index in range(BURST):
            export_id = str(uuid.uuid4())
            store.insert(export_id, f"tenant-{index % 3}", {"source": {"table": "payment.invoices"}, "limit": 100})
            ids.append(export_id)

        def finished() -> bool:
            for process, log in [(daemon, "daemon.log"), (workers[0], "machine-a.log"), (workers[1], "machine-b.log")]:
                assert process.poll() is None, (tmp_path / log).read_text()[-3000:]
            return all(store.get(i)["status"] in FINAL_STATUSES for i in ids)

        wait_for(finished, "the burst to finish", timeout=300)
        assert {i: store.get(i)["status"] for i in ids} == dict.fromkeys(ids, "SUCCEEDED"), (
            tmp_path / "daemon.log"
        ).read_text()[-3000:]
        assert all(store.get(i)["row_count"] == 100 for i in ids)
        with environment(settings), dg.DagsterInstance.get() as instance:
            pids = set()
            for export_id in ids:
                messages = [entry.message for entry in instance.all_logs(store.get(export_id)["run_id"])]
                pids |= {int(p) for m in messages for p in re.findall(r"process for run \(pid: (\d+)\)", m)}
        workers_of = {
            worker.pid: {child.pid for child in psutil.Process(worker.pid).children(recursive=True)}
            for worker in workers
        }
        used = {pid for pid, children in workers_of.items() if pids & children}
        assert used == {worker.pid for worker in workers}, "both workers ran some of the burst"
        listed = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix=settings["EXPORTS_PREFIX"])
        assert listed["KeyCount"] == 2 * BURST  # a file and a manifest per export
