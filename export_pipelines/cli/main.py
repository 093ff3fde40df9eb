"""`export-pipelines`: the service's command line: exports (submit, list, show, download, cancel,
retry, delete), the REST API (api, keys) and operations (dev deployment, demo warehouse, migrations)."""

import argparse
import os
from pathlib import Path

from export_pipelines.cli import cache, commands, keys
from export_pipelines.cli.commands import console
from export_pipelines.cli.unreachable import unreachable
from export_pipelines.settings import env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export-pipelines", description=__doc__)
    subcommands = parser.add_subparsers(dest="command", required=True)

    dev = subcommands.add_parser(
        "dev", help="start S3, the demo warehouse, Dagster and the REST API (embedded defaults)"
    )
    dev.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default 3000)")
    dev.add_argument("--api-port", type=int, default=8000, help="port of the REST API (default 8000)")
    dev.add_argument("--data-dir", type=Path, default=Path(".data"), help="where state is kept (default .data)")

    build = subcommands.add_parser("build-warehouse", help="(re)build the deterministic demo warehouse")
    build.add_argument("--path", type=Path, default=None, help="default: $EXPORTS_WAREHOUSE")
    build.add_argument("--rows", type=int, default=None, help="rows of payment.charges (default 100,000)")

    worker = subcommands.add_parser("worker", help="a run worker: executes runs from $EXPORTS_BROKER_URL, warm")
    worker.add_argument("--concurrency", type=int, default=os.cpu_count() or 1, help="runs at once (default: cores)")
    worker.add_argument(
        "--max-tasks-per-child", type=int, default=50, help="runs per pool process before it is replaced (default 50)"
    )
    worker.add_argument("--hostname", default=None, help="the worker's name (default celery@<host>)")

    subcommands.add_parser("migrate", help="create or migrate the export_requests table at $EXPORTS_DATABASE_URL")
    commands.register(subcommands)
    keys.register(subcommands)
    cache.register(subcommands)

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except Exception as error:
        message = unreachable(error)
        if message is None:
            raise
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        return 1


def _run(args: argparse.Namespace) -> int:
    for handlers in (commands.HANDLERS, keys.HANDLERS, cache.HANDLERS):
        if args.command in handlers:
            return handlers[args.command](args)
    if args.command == "dev":
        from export_pipelines.deploy.dev import run_dev

        return run_dev(args.port, args.api_port, args.data_dir.resolve())
    if args.command == "worker":
        from export_pipelines.orchestration.workers import run_worker
        from export_pipelines.settings import use_dev_environment

        use_dev_environment()
        run_worker(args.concurrency, args.max_tasks_per_child, args.hostname)
        return 0
    if args.command == "build-warehouse":
        from export_pipelines.deploy.demo_warehouse import DEMO_CHARGES_ROWS, build_demo_warehouse

        path = build_demo_warehouse(args.path or Path(env("EXPORTS_WAREHOUSE")), args.rows or DEMO_CHARGES_ROWS)
        print(f"demo warehouse written to {path}")
        return 0
    if args.command == "migrate":
        import sqlalchemy as sa

        from export_pipelines.store.database import migrate

        engine = sa.create_engine(env("EXPORTS_DATABASE_URL"))
        for change in migrate(engine) or ["already up to date"]:
            print(change)
        print(f"export_requests is ready at {engine.url.render_as_string(hide_password=True)}")
        return 0
    return 2
