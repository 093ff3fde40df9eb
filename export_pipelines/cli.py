"""`export-pipelines`: the service's command line (dev deployment, demo warehouse, migrations)."""

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from export_pipelines.settings import env

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export-pipelines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="start S3, the demo warehouse and Dagster on embedded defaults")
    dev.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")
    dev.add_argument("--data-dir", type=Path, default=Path(".data"), help="where state is kept (default .data)")

    build = commands.add_parser("build-warehouse", help="(re)build the deterministic demo warehouse")
    build.add_argument("--path", type=Path, default=None, help="default: $EXPORTS_WAREHOUSE")
    build.add_argument("--rows", type=int, default=None, help="rows of payment.charges (default 100,000)")

    commands.add_parser("migrate", help="create or migrate the export_requests table at $EXPORTS_DATABASE_URL")

    args = parser.parse_args(argv)
    if args.command == "dev":
        return run_dev(args.port, args.data_dir.resolve())
    if args.command == "build-warehouse":
        from export_pipelines.demo_warehouse import DEMO_CHARGES_ROWS, build_demo_warehouse

        path = build_demo_warehouse(args.path or Path(env("EXPORTS_WAREHOUSE")), args.rows or DEMO_CHARGES_ROWS)
        print(f"demo warehouse written to {path}")
        return 0
    if args.command == "migrate":
        import sqlalchemy as sa

        from export_pipelines.store import migrate

        engine = sa.create_engine(env("EXPORTS_DATABASE_URL"))
        for change in migrate(engine) or ["already up to date"]:
            print(change)
        print(f"export_requests is ready at {engine.url.render_as_string(hide_password=True)}")
        return 0
    return 2


def run_dev(port: int, data_dir: Path) -> int:
    """Start the local S3 server and `dagster dev` (webserver + daemon); Ctrl-C stops both."""
    from export_pipelines.demo_warehouse import build_demo_warehouse
    from export_pipelines.local_s3 import run_local_s3

    warehouse = Path(os.environ.get("EXPORTS_WAREHOUSE") or data_dir / "warehouse.duckdb")
    if not warehouse.exists():
        print(f"building the demo warehouse at {warehouse} ...", flush=True)
        build_demo_warehouse(warehouse)
    dagster_home = data_dir / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    bucket = env("EXPORTS_BUCKET")
    with run_local_s3(data_dir / "s3", buckets=(bucket,)) as s3:
        environment = {
            **os.environ,
            **s3.environment(),
            "DAGSTER_HOME": str(dagster_home),
            "EXPORTS_WAREHOUSE": str(warehouse),
            "EXPORTS_DATABASE_URL": os.environ.get("EXPORTS_DATABASE_URL") or f"sqlite:///{data_dir / 'exports.db'}",
        }
        command = [
            sys.executable, "-m", "dagster", "dev",
            "-w", str(PROJECT_ROOT / "workspace.yaml"),
            "-h", "127.0.0.1", "-p", str(port),
        ]  # fmt: skip
        dagster = subprocess.Popen(command, env=environment, cwd=PROJECT_ROOT, start_new_session=True)
        print(
            f"\nexport_pipelines is starting:\n"
            f"  Dagster UI   http://127.0.0.1:{port}  (Launchpad: Jobs > export_job)\n"
            f"  S3 endpoint  {s3.endpoint_url}  bucket {bucket!r}  (keys in {data_dir / 's3' / 'keys.json'})\n"
            f"  warehouse    {warehouse}\n"
            f"Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        try:
            return dagster.wait()
        except KeyboardInterrupt:
            print("stopping ...", flush=True)
            return 0
        finally:
            _stop_group(dagster)


def _stop_group(process: subprocess.Popen) -> None:
    """Stop a process and everything it started (it leads its own session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    raise SystemExit(main())
