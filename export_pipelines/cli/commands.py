"""The export commands of `export-pipelines`: thin shells over `ExportService` with readable
tables and a live status while waiting. In a shell next to `make dev` they find the running
deployment on their own (its `.data/dev.env.json`)."""

import argparse
import hashlib
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from export_pipelines.store.tables import FINAL_STATUSES

# Piped output (scripts, logs) gets wide tables instead of columns cut to 80 characters.
console = Console(width=None if sys.stdout.isatty() else 200)
HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {}
POLL_SECONDS = 0.5
RECORD_FIELDS = (
    "id", "project_id", "status", "source", "format", "compression", "row_count", "bytes",
    "duration_ms", "created_at", "finished_at", "run_id", "user_id", "client_source", "error",
)  # fmt: skip


def register(subcommands: argparse._SubParsersAction) -> None:
    submit = subcommands.add_parser("submit", help="queue an export request (JSON text or @file)")
    submit.add_argument("request", help='e.g. \'{"source": {"table": "payment.charges"}, "format": "parquet"}\'')
    submit.add_argument("--user", default=None, help="user id recorded as the requester")
    submit.add_argument("--wait", action="store_true", help="show the status until the export finishes")
    submit.add_argument("--download", type=Path, default=None, help="once SUCCEEDED, download into this folder")
    submit.add_argument("--timeout", type=float, default=600, help="seconds to wait at most (default 600)")
    submit.add_argument(
        "--dry-run", action="store_true", help="show the row count, columns and first rows; queue nothing"
    )

    listing = subcommands.add_parser("list", help="exports of a project, newest first")
    listing.add_argument("--project", default="default")
    listing.add_argument("--status", action="append", default=None, help="repeatable: PENDING, RUNNING, ...")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--before", type=datetime.fromisoformat, default=None, help="keyset cursor (created_at)")

    for name, text in [
        ("show", "one export with its files"),
        ("download", "download a SUCCEEDED export's files (checked against their sha256)"),
        ("cancel", "cancel a PENDING or RUNNING export"),
        ("retry", "queue a FAILED or CANCELLED export again"),
        ("delete", "remove a finished export's artifacts and record"),
    ]:
        command = subcommands.add_parser(name, help=text)
        command.add_argument("export_id")
        command.add_argument("--project", default=None, help="owner project (required by download)")
        if name == "show":
            command.add_argument("--wait", action="store_true", help="follow the export with a progress bar")
            command.add_argument("--timeout", type=float, default=600, help="seconds to follow at most (default 600)")
        if name == "download":
            command.add_argument("--to", type=Path, default=Path("."), help="target folder (default .)")
    HANDLERS.update(
        submit=_submit, list=_list, show=_show, download=_download, cancel=_cancel, retry=_retry, delete=_delete
    )


def _service():
    import dagster as dg

    from export_pipelines.service.exports import ExportService
    from export_pipelines.settings import optional_env, use_dev_environment

    use_dev_environment()
    instance = dg.DagsterInstance.get() if optional_env("DAGSTER_HOME") else None
    return ExportService.from_environment(instance)


def _guarded(handler: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Known failures print one line and exit 1 instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        from export_pipelines.engine.request import InvalidRequest
        from export_pipelines.engine.warehouse import WarehouseUnavailable
        from export_pipelines.service.exports import ExportNotFound
        from export_pipelines.store.exports import ExportConflict

        try:
            return handler(_service(), args)
        except (InvalidRequest, ExportNotFound, ExportConflict, WarehouseUnavailable, ValueError) as error:
            console.print(f"[red]error:[/red] {error}")
            return 1

    return run


@_guarded
def _submit(service, args: argparse.Namespace) -> int:
    raw = Path(args.request[1:]).read_text() if args.request.startswith("@") else args.request
    if args.dry_run:
        _print_preview(service.preview(raw))
        return 0
    export_id = service.submit(raw, {"user_id": args.user, "client_source": "cli"}, launching=True)
    service.launch(export_id, "cli")
    console.print(f"submitted export [bold]{export_id}[/bold]")
    if not (args.wait or args.download):
        return 0
    record = _wait(service, export_id, args.timeout)
    _print_record(record)
    if record["status"] != "SUCCEEDED":
        return 1
    if args.download:
        _fetch(service, record, args.download)
    return 0


def _print_preview(preview) -> None:
    console.print(f"dry run: the export would write [bold]{preview.row_count:,}[/bold] rows (nothing was queued)")
    columns = Table("column", "type")
    for column in preview.columns:
        columns.add_row(column["name"], column["type"])
    console.print(columns)
    sample = Table(*(column["name"] for column in preview.columns), title=f"first {len(preview.sample)} rows")
    for row in preview.sample:
        sample.add_row(*(_sample_cell(row.get(column["name"])) for column in preview.columns))
    console.print(sample)


def _sample_cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


class RowsColumn(ProgressColumn):
    """`1,200,000 of 3,000,000 rows` once the total is known."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        return Text(f"{task.completed:,.0f} of {task.total:,.0f} rows", style="progress.download", no_wrap=True)


def _wait(service, export_id: str, timeout: float) -> dict[str, Any]:
    """Follow the export with a live progress bar until it is final or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), RowsColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("PENDING", total=None)
        while True:
            record = service.get(export_id)
            total, written = record["total_rows"], record["rows_written"] or 0
            if record["status"] == "SUCCEEDED":
                total = written = record["row_count"]
            bar.update(task, description=f"[bold]{record['status']}[/bold]", total=total)
            bar.update(task, completed=written)
            if record["status"] in FINAL_STATUSES or time.monotonic() > deadline:
                return record
            time.sleep(POLL_SECONDS)


def _print_record(record: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for field in RECORD_FIELDS:
        if record.get(field) is not None:
            table.add_row(f"[dim]{field}[/dim]", _cell(record[field]))
    if record["status"] == "RUNNING" and record["total_rows"] is not None:
        table.add_row("[dim]progress[/dim]", _progress(record["rows_written"] or 0, record["total_rows"]))
    console.print(table)
    if record["files"]:
        files = Table("key", "rows", "bytes", "sha256")
        for file in record["files"]:
            files.add_row(file["key"], f"{file['rows']:,}", f"{file['bytes']:,}", file["sha256"][:16] + "…")
        console.print(files)


def _progress(written: int, total: int) -> Table:
    """A still progress bar with its figures, for one look at a RUNNING export."""
    line = Table.grid(padding=(0, 1))
    percent = 100 * written / total if total else 100.0
    line.add_row(
        ProgressBar(total=max(total, 1), completed=written, width=40), f"{percent:.0f}%  {written:,} of {total:,} rows"
    )
    return line


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@_guarded
def _list(service, args: argparse.Namespace) -> int:
    records = service.list(args.project, [s.upper() for s in args.status or []], args.limit, args.before)
    table = Table("id", "status", "source", "format", "rows", "bytes", "created_at", "error")
    for record in records:
        table.add_row(
            record["id"],
            record["status"],
            record["source"] or "",
            "/".join(filter(None, [record["format"], record["compression"]])),
            _cell(record["row_count"]) if record["row_count"] is not None else "",
            _cell(record["bytes"]) if record["bytes"] is not None else "",
            _cell(record["created_at"]),
            (record["error"] or "")[:60],
        )
    console.print(table)
    if records:
        console.print(f"[dim]next page: --before {records[-1]['created_at'].isoformat()}[/dim]")
    return 0


@_guarded
def _show(service, args: argparse.Namespace) -> int:
    record = service.get(args.export_id, args.project)
    if args.wait and record["status"] not in FINAL_STATUSES:
        record = _wait(service, args.export_id, args.timeout)
    _print_record(record)
    console.print(f"[dim]request:[/dim] {json.dumps(json.loads(record['request']))}")
    return 0


@_guarded
def _download(service, args: argparse.Namespace) -> int:
    record = service.get(args.export_id, args.project)
    _fetch(service, record, args.to)
    return 0


def _fetch(service, record: dict[str, Any], folder: Path) -> None:
    """Download through the presigned links and check every file's sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    for link in service.download_urls(record["id"], record["project_id"]):
        target = folder / link["key"].rsplit("/", 1)[1]
        digest = hashlib.sha256()
        with urllib.request.urlopen(link["url"], timeout=60) as response, open(target, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != link["sha256"]:
            raise ValueError(f"{target} does not match its sha256 in the manifest")
        console.print(f"downloaded {target} ({link['bytes']:,} bytes, {link['rows']:,} rows, sha256 ok)")


@_guarded
def _cancel(service, args: argparse.Namespace) -> int:
    status = service.cancel(args.export_id, args.project)
    console.print(f"export {args.export_id}: {'CANCELLED' if status == 'CANCELLED' else 'cancelling its run'}")
    return 0


@_guarded
def _retry(service, args: argparse.Namespace) -> int:
    attempt = service.retry(args.export_id, args.project)
    console.print(f"export {args.export_id} queued again (attempt {attempt})")
    return 0


@_guarded
def _delete(service, args: argparse.Namespace) -> int:
    deleted = service.delete(args.export_id, args.project)
    console.print(f"export {args.export_id} deleted ({deleted} objects)")
    return 0
