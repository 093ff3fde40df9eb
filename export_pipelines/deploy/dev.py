"""The dev deployment: the local S3 server, the demo warehouse, `dagster dev` (webserver and daemon),
the REST API and a warm run worker on embedded defaults, all stopped by Ctrl-C."""

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from export_pipelines.deploy.readiness import stop, wait_until_ready
from export_pipelines.settings import DEV_ENVIRONMENT_FILE, env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "export_pipelines.cli"]


def run_dev(port: int, api_port: int, data_dir: Path) -> int:
    """Start the local S3 server, `dagster dev` (webserver + daemon), the REST API and a run worker
    (broker on local disk); Ctrl-C or SIGTERM stops them all."""
    from export_pipelines.deploy.demo_catalog import build_demo_catalog
    from export_pipelines.deploy.demo_warehouse import build_demo_warehouse
    from export_pipelines.deploy.local_s3 import run_local_s3

    # Ctrl-C and `kill` both stop everything, also when started in the background (where SIGINT
    # arrives ignored, and ignoring would pass on to every process started here).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    warehouse = Path(os.environ.get("EXPORTS_WAREHOUSE") or data_dir / "warehouse.duckdb")
    if not warehouse.exists():
        print(f"building the demo warehouse at {warehouse} ...", flush=True)
        build_demo_warehouse(warehouse)
    catalogs = os.environ.get("EXPORTS_CATALOGS") or str(build_demo_catalog(data_dir / "catalog"))
    dagster_home = data_dir / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    create_instance_storage(dagster_home)
    slots = worker_slots(dagster_home)
    bucket = env("EXPORTS_BUCKET")
    with run_local_s3(data_dir / "s3", buckets=(bucket,)) as s3:
        environment = {
            **os.environ,
            **s3.environment(),
            "DAGSTER_HOME": str(dagster_home),
            "EXPORTS_WAREHOUSE": str(warehouse),
            "EXPORTS_DATABASE_URL": os.environ.get("EXPORTS_DATABASE_URL") or f"sqlite:///{data_dir / 'exports.db'}",
            "EXPORTS_BROKER_URL": os.environ.get("EXPORTS_BROKER_URL") or f"filesystem://{data_dir / 'broker'}",
            "EXPORTS_CATALOGS": catalogs,
            "EXPORTS_CACHE_DIR": os.environ.get("EXPORTS_CACHE_DIR") or str(data_dir / "cache"),
            # Doors (the REST API, the CLI) launch runs at once through the webserver's GraphQL API.
            "DAGSTER_UI_URL": f"http://127.0.0.1:{port}",
            # The venv's own commands (celery, dagster) for the processes started here.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        # The export-pipelines commands of another shell find the running deployment here.
        exported = {
            k: v
            for k, v in environment.items()
            if k.startswith(("EXPORTS_", "AWS_")) or k in ("DAGSTER_HOME", "DAGSTER_UI_URL")
        }
        exported["EXPORTS_API_URL"] = f"http://127.0.0.1:{api_port}"
        dev_file = data_dir / DEV_ENVIRONMENT_FILE
        dev_file.write_text(json.dumps(exported))
        dev_file.chmod(0o600)
        command = [
            sys.executable, "-m", "dagster", "dev",
            "-w", str(PROJECT_ROOT / "workspace.yaml"),
            "-h", "127.0.0.1", "-p", str(port),
        ]  # fmt: skip
        # Each in a session of its own, so that stopping it stops everything it started.
        start = functools.partial(subprocess.Popen, env=environment, cwd=PROJECT_ROOT, start_new_session=True)
        started = {
            "Dagster": start(command),
            "REST API": start([*CLI, "api", "--host", "127.0.0.1", "--port", str(api_port)]),
            "run worker": start([*CLI, "worker", "--concurrency", str(slots), "--hostname", f"dev-{os.getpid()}@%h"]),
        }
        print(
            f"\nexport_pipelines is starting:\n"
            f"  Dagster UI   http://127.0.0.1:{port}  (Launchpad: Jobs > export_job)\n"
            f"  REST API     http://127.0.0.1:{api_port}  (docs: /docs; a key: export-pipelines keys create)\n"
            f"  run worker   broker {environment['EXPORTS_BROKER_URL']}\n"
            f"  S3 endpoint  {s3.endpoint_url}  bucket {bucket!r}  (keys in {data_dir / 's3' / 'keys.json'})\n"
            f"  warehouse    {warehouse}\n"
            f"  catalogs     {catalogs}  (cached tables: export-pipelines cache batch)\n"
            f"Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        try:
            while all(process.poll() is None for process in started.values()):
                time.sleep(0.5)
            ended = next(name for name, process in started.items() if process.poll() is not None)
            print(f"{ended} exited; stopping everything", flush=True)
            return started[ended].returncode or 1
        except KeyboardInterrupt:
            print("stopping ...", flush=True)
            return 0
        finally:
            for process in reversed(started.values()):
                _stop_group(process)


def create_instance_storage(dagster_home: Path) -> None:
    """Create (or migrate) the Dagster instance's SQLite databases in this one process, before the
    webserver, the daemon, the code server and the worker start: racing to create them, two of them
    could each stamp a new database's schema version, which left it unusable ("more than one head")."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.upgrade()
        instance.get_runs(limit=1)
        instance.all_instigator_state()


def worker_slots(dagster_home: Path) -> int:
    """The dev worker's pool size: one process per core, and at least as many as the run queue lets
    run at once (`max_concurrent_runs`). A run the queue hands over beyond the slots waits in the
    broker as STARTING, and run monitoring fails it once it waited longer than the start timeout."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        at_once = instance.run_coordinator.get_run_queue_config().max_concurrent_runs
    return max(os.cpu_count() or 1, at_once)


def _stop_group(process: subprocess.Popen) -> None:
    """Stop a process and everything it started (it leads its own session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def dev_command(port: int, api_port: int, data_dir: Path) -> list[str]:
    """`export-pipelines dev` on the given ports and data directory, as a subprocess command."""
    return [*CLI, "dev", "--port", str(port), "--api-port", str(api_port), "--data-dir", str(data_dir)]


@contextlib.contextmanager
def running_dev_deployment(
    data_dir: Path, environment: dict[str, str], port: int, api_port: int, timeout: float = 120.0
) -> Iterator[dict[str, str]]:
    """`export-pipelines dev` in a subprocess (tests, benchmarks): yields the environment that
    reaches it once the UI and the REST API answer; stops everything on exit."""
    log = data_dir / "dev.log"
    process = subprocess.Popen(
        dev_command(port, api_port, data_dir),
        env=environment,
        stdout=open(log, "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
    )
    try:
        dev_file = data_dir / DEV_ENVIRONMENT_FILE
        urls = [f"http://127.0.0.1:{port}/server_info", f"http://127.0.0.1:{api_port}/healthz"]
        wait_until_ready(process, urls, "the dev deployment", log, timeout, also=dev_file.exists)
        yield {**json.loads(dev_file.read_text()), "_pid": str(process.pid)}
    finally:
        stop(process, signal.SIGINT, 60)
